"""The content-keyed disk cache: hits, misses, corruption, atomicity, clean."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from helpers import dm_for
from lightrec.data import cache


def make_dm(csv, cache_dir, **kw):
    args = {"use_cache": True, "cache_dir": str(cache_dir), "min_interactions": 2, **kw}
    return dm_for(csv, cache_dir.parent, **args)


def entries(cache_dir):
    return sorted(p.name for p in cache_dir.glob("lightrec-*") if p.is_dir())


def test_hit_gives_identical_arrays(tiny_csv, tmp_path):
    c = tmp_path / "cache"
    first = make_dm(tiny_csv, c)
    second = make_dm(tiny_csv, c)
    assert not first.from_cache and second.from_cache
    for k in first.arrays:
        assert np.array_equal(first.arrays[k], second.arrays[k])
    assert first.meta["item_ids"] == second.meta["item_ids"]
    assert len(entries(c)) == 1
    assert not list(c.glob(".tmp-*"))  # nothing half-written left behind


def test_miss_when_data_changes(tiny_csv, tmp_path):
    c = tmp_path / "cache"
    make_dm(tiny_csv, c)
    time.sleep(0.01)
    with open(tiny_csv, "a") as f:
        f.write("0,29,99999\n")
    again = make_dm(tiny_csv, c)
    assert not again.from_cache
    assert len(entries(c)) == 2


def test_miss_when_a_split_parameter_changes(tiny_csv, tmp_path):
    c = tmp_path / "cache"
    make_dm(tiny_csv, c)
    assert not make_dm(tiny_csv, c, holdout="valid_and_test").from_cache
    assert not make_dm(tiny_csv, c, min_interactions=3).from_cache
    # a parameter that does not shape this strategy's result is not part of the key
    assert make_dm(tiny_csv, c, valid_ratio=0.5).from_cache
    assert make_dm(tiny_csv, c, batch_size=999).from_cache


@pytest.mark.parametrize("damage", ["truncate_npz", "garbage_meta", "drop_npz", "bad_lengths"])
def test_corrupt_entry_is_rebuilt_with_a_warning(tiny_csv, tmp_path, damage):
    c = tmp_path / "cache"
    good = make_dm(tiny_csv, c)
    (entry,) = [c / e for e in entries(c)]
    npz, meta = entry / "arrays.npz", entry / "meta.json"
    if damage == "truncate_npz":
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    elif damage == "garbage_meta":
        meta.write_text("{not json")
    elif damage == "drop_npz":
        npz.unlink()
    else:
        m = json.loads(meta.read_text())
        m["lengths"]["user"] += 1
        meta.write_text(json.dumps(m))
    with pytest.warns(UserWarning, match="corrupt"):
        rebuilt = make_dm(tiny_csv, c)
    assert not rebuilt.from_cache
    assert np.array_equal(rebuilt.arrays["item"], good.arrays["item"])
    assert make_dm(tiny_csv, c).from_cache  # the rebuilt entry is good


def test_flipped_byte_in_arrays_is_detected(tiny_csv, tmp_path):
    c = tmp_path / "cache"
    make_dm(tiny_csv, c)
    npz = c / entries(c)[0] / "arrays.npz"
    blob = bytearray(npz.read_bytes())
    blob[len(blob) // 3] ^= 0xFF  # inside an array's data: only the zip CRC can tell
    npz.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="corrupt"):
        assert not make_dm(tiny_csv, c).from_cache


def test_clean_removes_only_this_toolkits_entries(tiny_csv, tmp_path):
    c = tmp_path / "cache"
    make_dm(tiny_csv, c)
    (c / "someone-elses.bin").write_text("keep me")
    removed = cache.clean(c)
    assert removed and entries(c) == []
    assert (c / "someone-elses.bin").exists()


def test_no_pickle_in_the_entry(tiny_csv, tmp_path):
    c = tmp_path / "cache"
    make_dm(tiny_csv, c)
    with np.load(c / entries(c)[0] / "arrays.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
