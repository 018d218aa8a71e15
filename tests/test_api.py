"""The Python API over a finished run (lightrec.load_run) and ``python -m lightrec
recommend``: the lists equal the run's submission for every model, a known user's history
folded in gives that user's lists, unknown items are ignored with one warning, bad input is
one sentence."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import lightrec
from helpers import CONTRACT, compose_cfg, cpu_overrides, make_log
from lightrec import cli
from lightrec.errors import LightrecError
from lightrec.serving import predict
from lightrec.training import fit as train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One finished run (with its submission) of every model, on one small log."""
    tmp = tmp_path_factory.mktemp("api")
    csv = tmp / "log.csv"
    make_log(n_users=30, n_items=25, per_user=10).to_csv(csv, index=False)
    out = {}
    for config, extra in CONTRACT.items():
        run_dir = tmp / "saved" / "hydra_logs" / config / "d" / "t"
        overrides = [*cpu_overrides(tmp, csv), "trainer.max_epochs=2", "predict.top_k=5", *extra]
        cfg = compose_cfg(config, overrides, run_dir)
        train.fit(cfg)
        predict.run(cfg)
        out[config] = run_dir
    return csv, out


@pytest.mark.parametrize("config", list(CONTRACT))
def test_recommend_is_the_submission_and_fold_in_is_consistent(runs, config):
    csv, run_dirs = runs
    run = lightrec.load_run(run_dirs[config])
    recs = run.recommend(k=5)
    sub = pd.read_csv(run_dirs[config] / "submission.csv")
    assert recs[["user", "item"]].values.tolist() == sub.values.tolist()
    assert (recs.groupby("user")["rank"].apply(list) == [[1, 2, 3, 4, 5]] * 30).all()
    assert (recs.groupby("user")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()

    # a history equal to a known user's (their rows of the file, renamed) gets their lists
    log = pd.read_csv(csv)
    theirs = log[log.user.isin([3, 17])].assign(user=lambda d: d.user.map({3: "a", 17: "b"}))
    folded = run.recommend_histories(theirs, k=5)
    known = run.recommend(users=[3, 17], k=5)
    assert folded.item.tolist() == known.item.tolist()
    assert np.allclose(folded.score, known.score, rtol=1e-5, atol=1e-6)
    assert folded.user.tolist() == ["a"] * 5 + ["b"] * 5

    similar = run.similar_items(4, k=3)
    assert list(similar.columns) == ["item", "score", "rank"] and 4 not in similar.item.tolist()


def test_unknown_items_are_counted_and_ignored_with_one_warning(runs):
    run = lightrec.load_run(runs[1]["ease"])
    history = pd.DataFrame({"user": ["a", "a", "a", "b"], "item": [1, 999, "x", 2]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recs = run.recommend_histories(history, k=3)
    assert [str(w.message) for w in caught] == [
        "2 history rows name items the model does not know; they were ignored"
    ]
    assert recs.user.tolist() == ["a"] * 3 + ["b"] * 3
    assert 1 not in recs[recs.user == "a"].item.tolist()


def test_bad_requests_are_one_sentence(runs):
    run = lightrec.load_run(runs[1]["ease"])
    cases = [
        (lambda: run.recommend(users=[3, "nobody"]), "user 'nobody' is not in the run's data"),
        (lambda: run.recommend(k=0), "predict.top_k"),
        (lambda: run.recommend_histories(pd.DataFrame({"user": [1]})), "no column item"),
        (lambda: run.similar_items("nope"), "item 'nope' is not one of the model's items"),
        (lambda: lightrec.load_run(runs[0].parent / "nothing"), "not a finished training run"),
        (lambda: lightrec.load_run(runs[1]["ease"], device="gpu9"), "device 'gpu9'"),
    ]
    for call, fragment in cases:
        with pytest.raises(LightrecError, match=fragment):
            call()


def test_the_latest_run_of_a_config(runs):
    log_root = runs[0].parent / "saved" / "hydra_logs"
    run = lightrec.load_run(config="ease", log_root=log_root)
    assert run.path == runs[1]["ease"] and run.checkpoint.name == "refit.ckpt"


def test_recommend_from_the_shell(runs, tmp_path, capsys):
    csv, run_dirs = runs
    histories = tmp_path / "histories.csv"
    histories.write_text("user,item,time\n007,1,5\n007,2,6\n7,3,1\n7,unknown,2\n")
    out = tmp_path / "recs.csv"
    args = ["recommend", str(run_dirs["sasrec"]), "--histories", str(histories), "--k", "4"]
    assert cli.main([*args, "--out", str(out)]) == 0
    recs = pd.read_csv(out, dtype={"user": str})
    assert recs.user.tolist() == ["007"] * 4 + ["7"] * 4  # ids as text, in sorted order
    assert not {1, 2} & set(recs[recs.user == "007"].item)
    assert list(recs.columns) == ["user", "item", "score", "rank"]

    everyone = tmp_path / "all.csv"
    assert cli.main(["recommend", str(run_dirs["ease"]), "--out", str(everyone), "--k", "5"]) == 0
    sub = pd.read_csv(run_dirs["ease"] / "submission.csv")
    assert pd.read_csv(everyone)[["user", "item"]].values.tolist() == sub.values.tolist()

    capsys.readouterr()
    assert cli.main([*args[:4], "--k", "0", "--out", str(tmp_path / "x.csv")]) == 2
    assert cli.main([*args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 2 and "Traceback" not in err and "is a folder" in err
    assert not (tmp_path / "x.csv").exists()


# ---------------------------------------------------------------- the HTTP endpoint


def _call(url: str, body: bytes | None = None) -> tuple[int, dict]:
    """A real HTTP request (urllib): (status, JSON body), 4xx and 5xx included."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(runs):
    """``python -m lightrec serve`` on a loopback port, as a user starts it."""
    import subprocess
    import sys
    import time
    import urllib.error

    from helpers import free_port

    port = free_port()
    output = runs[0].parent / f"serve-{port}.out"  # a file, never a pipe nobody drains
    with open(output, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lightrec",
                "serve",
                str(runs[1]["sasrec"]),
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, output.read_text()[-2000:]
        try:
            if _call(base + "/health")[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
    yield base, runs[1]["sasrec"]
    proc.terminate()
    proc.wait(timeout=30)


def test_the_server_answers_like_the_api(server, runs):
    base, run_dir = server
    status, health = _call(base + "/health")
    assert status == 200 and health["model"] == "SASRec" and health["run"] == str(run_dir)
    run = lightrec.load_run(run_dir)

    body = {"items": [4, "5", 6, "not-an-item"], "times": [3, 1, 2, 4], "k": 4}
    status, answer = _call(base + "/recommend", json.dumps(body).encode())
    assert status == 200 and answer["unknown_items"] == 1
    history = pd.DataFrame({"user": "u", "item": [4, 5, 6], "time": [3, 1, 2]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = run.recommend_histories(history, k=4)
    assert answer["items"] == expected.item.tolist()
    assert np.allclose(answer["scores"], expected.score, rtol=1e-5, atol=1e-6)

    status, answer = _call(base + "/users/3/recommendations?k=5")
    sub = pd.read_csv(run_dir / "submission.csv")
    assert status == 200 and answer["items"] == sub[sub.user == 3].item.tolist()


@pytest.mark.parametrize(
    "path, body, status, fragment",
    [
        ("/users/nobody/recommendations", None, 404, "user 'nobody' is not in the run's data"),
        ("/users/3/recommendations?k=0", None, 422, "k: Input should be greater than"),
        ("/users/3/recommendations?k=500", None, 422, "k=500 is more than the 24 items"),
        ("/recommend", b'{"items": [1, 2', 422, "the body is not valid JSON"),
        ("/recommend", b'{"items": []}', 422, "items is empty"),
        ("/recommend", b'{"items": ["x", "y"]}', 422, "none of the history's items is known"),
        ("/recommend", b'{"items": [1], "k": 0}', 422, "k: Input should be greater than"),
        ("/recommend", b'{"items": [1, 2], "k": 24}', 422, "k=24 is more than the items"),
        ("/recommend", b'{"items": [1, 2], "times": [1]}', 422, "one time per item"),
        ("/recommend", b'{"items": "1,2"}', 422, "items: Input should be a valid list"),
        ("/recommend", b'{"items": [%s]}' % b",".join([b"1"] * 10_001), 422, "at most 10000"),
    ],
)
def test_bad_requests_are_a_4xx_with_one_sentence(server, path, body, status, fragment):
    got, answer = _call(server[0] + path, body)
    assert got == status and fragment in answer["error"], answer
    assert answer["error"].count("\n") == 0 and list(answer) == ["error"]


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("config", list(CONTRACT))
def test_the_exported_scorer_ranks_like_the_toolkit(runs, config, tmp_path):
    """Every model's scorer as a torch.export program: loaded without lightrec's classes,
    the same top 10 for every user (a batch of another size than the export's); the check
    catches a scorer that is not this run's."""
    from lightrec.serving import export

    run = lightrec.load_run(runs[1][config])
    out = export.export(run, tmp_path / "scorer.pt2")
    assert export.check(run, out, n_users=30) == 0
    assert json.loads((tmp_path / "scorer.pt2.items.json").read_text()) == run.item_ids
    scores = torch.export.load(str(out)).module()(export.model_input(run, [0, 1, 2])[0])
    assert scores.shape == (3, len(run.item_ids))
    same_view = {"sasrec": "bert4rec_v2", "bert4rec_v2": "sasrec", "pop": "ease"}
    other = lightrec.load_run(runs[1][same_view.get(config, "pop")])
    export.export(other, tmp_path / "other.pt2")
    assert export.check(run, tmp_path / "other.pt2", n_users=30) > 0


def test_export_from_the_shell(runs, tmp_path, capsys):
    out = tmp_path / "scorer.pt2"
    assert cli.main(["export", str(runs[1]["multi_vae_v2"]), "--out", str(out)]) == 0
    assert "the same top 10 as the toolkit for 100 users" in capsys.readouterr().out
    assert cli.main(["export", str(runs[1]["multi_vae_v2"]), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
