"""What killed writes leave is cleaned on the next start; a garbage memo is rebuilt; clean
never follows a symbolic link (issue 21, points 9 and 10)."""

from __future__ import annotations

import json
import os
import time

from helpers import compose_cfg, cpu_overrides, dm_for
from lightrec.data import cache
from lightrec.serving import predict
from lightrec.training import fit as train
from lightrec.utils.io import remove_stale_temps
from lightrec.utils.path_utils import RunDir


def _age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_garbage_fingerprint_memo_is_rebuilt(tmp_path, tiny_csv):
    memo = tmp_path / "cache" / cache.FINGERPRINTS
    memo.parent.mkdir()
    memo.write_text("[]")
    digest = cache.file_md5(tiny_csv, tmp_path / "cache")
    assert json.loads(memo.read_text())[str(tiny_csv.resolve())]["md5"] == digest
    assert cache.remembered_md5(tiny_csv, tmp_path / "cache") == digest


def test_the_next_data_preparation_removes_a_killed_cache_write(tmp_path, tiny_csv):
    root = tmp_path / "cache"
    half = root / ".tmp-lightrec-0123abcd-xyz"
    half.mkdir(parents=True)
    (half / "arrays.npz").write_bytes(b"PK half")
    stale = root / f".{cache.FINGERPRINTS}.abc.tmp"
    stale.write_text("{")
    _age(stale, 3600)
    young = root / f".{cache.FINGERPRINTS}.def.tmp"  # maybe a write in progress: kept
    young.write_text("{")
    dm_for(tiny_csv, tmp_path, use_cache=True, cache_dir=str(root))
    assert not half.exists() and not stale.exists() and young.exists()
    assert len(list(root.glob("lightrec-*/arrays.npz"))) == 1  # the entry itself was made


def test_the_next_predict_removes_a_killed_submission_write(tmp_path, tiny_csv):
    overrides = cpu_overrides(tmp_path, tiny_csv)
    run_dir = tmp_path / "saved" / "hydra_logs" / "ease" / "d" / "t"
    train.fit(compose_cfg("ease", overrides, run_dir))
    leftover = run_dir / ".submission.csv.k1ll3d.tmp"
    leftover.write_text("user,item\n1,")
    _age(leftover, 3600)
    predict.run(compose_cfg("ease", [*overrides, f"run_dir={run_dir}"], tmp_path / "p"))
    assert not leftover.exists() and RunDir(run_dir).submission.is_file()


def test_stale_temps_are_only_atomic_writes_and_only_old_ones(tmp_path):
    old = tmp_path / ".x.csv.1.tmp"
    new = tmp_path / ".x.csv.2.tmp"
    other = tmp_path / "notes.tmp"  # not an atomic write's name
    for p in (old, new, other):
        p.write_text("")
    _age(old, 3600)
    _age(other, 3600)
    assert remove_stale_temps(tmp_path) == [old]
    assert new.exists() and other.exists()


def test_clean_skips_a_symbolic_link(tmp_path, capsys):
    root = tmp_path / "cache"
    root.mkdir()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    (root / "lightrec-0123456789abcdef").symlink_to(precious)
    entry = root / "lightrec-fedcba9876543210"
    entry.mkdir()
    removed = cache.clean(root)
    assert removed == [entry] and (precious / "thesis.tex").is_file()
    assert "skipped" in capsys.readouterr().err


def test_a_pipe_as_the_data_file_is_one_sentence(tmp_path, tiny_csv):
    import pytest

    from lightrec.errors import LightrecError

    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    with pytest.raises(LightrecError, match="is not a regular file .* save it to a file first"):
        dm_for(fifo, tmp_path)
