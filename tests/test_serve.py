"""The server's limits and its shape (issues 32 and 33): a body too large is refused before
it is parsed, every error is one JSON sentence, repeats are one item, /health never waits
behind scoring, concurrent requests share one forward pass, and a request's work follows
the request, not the run's number of users. Driven through the ASGI interface itself."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading

import numpy as np
import pandas as pd
import pytest
import yaml

import lightrec
from helpers import compose_cfg, cpu_overrides, make_log
from lightrec.data import order
from lightrec.serving import api, serve
from lightrec.training import fit as train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    csv = tmp / "log.csv"
    make_log().to_csv(csv, index=False)
    out = {}
    for config, extra in (("ease", []), ("sasrec", ["data.max_len=8", "model.hidden_size=16"])):
        run_dir = tmp / "saved" / "hydra_logs" / config / "d" / "t"
        train.fit(compose_cfg(config, [*cpu_overrides(tmp, csv), *extra], run_dir))
        out[config] = run_dir
    return out


async def _request(app, method: str, path: str, body: bytes = b"", headers=None, chunks=None):
    """One HTTP request through the ASGI app: (status, JSON body, bytes the app read)."""
    sent = {"status": None, "body": b""}
    pieces = list(chunks) if chunks is not None else [body]
    read = {"bytes": 0}

    async def receive():
        if pieces:
            piece = pieces.pop(0)
            read["bytes"] += len(piece)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    raw_headers = [(b"content-type", b"application/json")]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": raw_headers,
        "scheme": "http",
        "server": ("test", 80),
        "client": ("test", 1),
        "root_path": "",
    }
    try:
        await app(scope, receive, send)
    except Exception:  # raised again after a 500 was sent, as a server would log it
        assert sent["status"] == 500
    return sent["status"], json.loads(sent["body"]), read["bytes"]


def _call(app, *args, **kw):
    return asyncio.run(_request(app, *args, **kw))


def test_a_huge_body_is_refused_before_it_is_parsed(runs):
    app = serve.create_app(lightrec.load_run(runs["ease"]))
    huge = 100 << 20
    # declared: refused on the header, nothing read
    status, answer, read = _call(
        app, "POST", "/recommend", headers={"content-length": str(huge)}, chunks=[b"{" * 1024]
    )
    assert status == 413 and "over 2,097,152 bytes" in answer["error"] and read == 0
    # streamed without a length: refused once the bytes pass the limit, not at the end
    chunks = [b" " * (1 << 20)] * 100  # 100 MB in 1 MB pieces
    status, answer, read = _call(app, "POST", "/recommend", chunks=chunks)
    assert status == 413 and read <= 3 << 20


def test_every_error_is_one_json_sentence_even_an_unexpected_one(runs, monkeypatch):
    run = lightrec.load_run(runs["ease"])
    app = serve.create_app(run)
    cases = [
        ({"items": ["x" * 300], "k": 5}, 422, "items.0"),  # an id past MAX_ID_CHARS
        ({"items": ["1"], "times": list(range(serve.MAX_HISTORY + 1))}, 422, "times"),
        ({"items": ["1", "2"], "times": ["yesterday", 1]}, 422, "times must be numbers or dates"),
    ]
    for body, status, fragment in cases:
        got, answer, _ = _call(app, "POST", "/recommend", json.dumps(body).encode())
        assert got == status and fragment in answer["error"], answer

    def broken(*args, **kw):
        raise RuntimeError("a bug")

    monkeypatch.setattr(run, "top_of_histories", broken)
    status, answer, _ = _call(app, "POST", "/recommend", json.dumps({"items": ["1"]}).encode())
    assert status == 500 and answer == {
        "error": "internal error (RuntimeError); see the server's log"
    }


def test_a_history_with_repeats_counts_each_item_once(runs):
    run = lightrec.load_run(runs["ease"])
    app = serve.create_app(run)
    items = [str(i) for i in run.item_ids[:5]]
    k = len(run.item_ids) - 5  # every item the history has not seen
    body = {"items": items + items, "k": k}  # each item twice: still 5 seen
    status, answer, _ = _call(app, "POST", "/recommend", json.dumps(body).encode())
    assert status == 200, answer
    assert len(answer["items"]) == k and not set(answer["items"]) & set(map(str, items)) - {""}


def test_health_answers_while_requests_queue_on_scoring(runs, monkeypatch):
    run = lightrec.load_run(runs["ease"])
    app = serve.create_app(run)
    release = threading.Event()
    real = run.top_of_histories

    def slow(*args, **kw):
        release.wait(timeout=30)  # the model is busy
        return real(*args, **kw)

    monkeypatch.setattr(run, "top_of_histories", slow)

    async def scenario():
        body = json.dumps({"items": [str(run.item_ids[0])], "k": 3}).encode()
        queued = [asyncio.create_task(_request(app, "POST", "/recommend", body)) for _ in range(16)]
        await asyncio.sleep(0.2)
        health = await asyncio.wait_for(_request(app, "GET", "/health"), timeout=5)
        waiting = sum(not t.done() for t in queued)
        release.set()
        answers = await asyncio.gather(*queued)
        return health, waiting, answers

    health, waiting, answers = asyncio.run(scenario())
    assert health[0] == 200 and health[1]["status"] == "ok"
    assert waiting == 16  # all of them were still waiting on the model
    assert all(status == 200 for status, _, _ in answers)


def test_concurrent_requests_share_one_forward_pass(runs, monkeypatch):
    run = lightrec.load_run(runs["sasrec"])
    app = serve.create_app(run, max_batch=8)
    release, sizes = threading.Event(), []
    real = run.top_of_histories

    def counted(histories, k, **kw):
        release.wait(timeout=30)
        sizes.append(len(histories))
        return real(histories, k, **kw)

    monkeypatch.setattr(run, "top_of_histories", counted)
    ids = [str(i) for i in run.item_ids]

    async def scenario():
        bodies = [json.dumps({"items": ids[n : n + 4], "k": 5}).encode() for n in range(9)]
        tasks = [asyncio.create_task(_request(app, "POST", "/recommend", b)) for b in bodies]
        await asyncio.sleep(0.2)
        release.set()
        return await asyncio.gather(*tasks)

    answers = asyncio.run(scenario())
    assert sum(sizes) == 9 and max(sizes) > 1 and max(sizes) <= 8  # together, at most 8
    for n, (status, answer, _) in enumerate(answers):  # each its own answer
        assert status == 200
        alone = run.recommend_histories(pd.DataFrame({"user": 0, "item": ids[n : n + 4]}), 5)
        assert answer["items"] == alone["item"].tolist()


def test_a_requests_work_follows_the_request_not_the_run(runs, tmp_path, monkeypatch):
    """Built once at start: the users' inputs, the item and user indexes. A request then
    orders only its own rows: first_rows sees a history's items, never the run's users."""
    run = lightrec.load_run(runs["sasrec"])
    app = serve.create_app(run)
    seen = []
    real = order.first_rows

    def watched(user, item, time):
        seen.append(len(user))
        return real(user, item, time)

    monkeypatch.setattr(order, "first_rows", watched)
    monkeypatch.setattr("lightrec.data.interactions.first_rows", watched)
    user = str(run.history.users[3])
    status, answer, _ = _call(app, "GET", f"/users/{user}/recommendations?k=5")
    assert status == 200 and seen == []  # a known user: nothing rebuilt
    items = [str(i) for i in run.item_ids[:7]]
    status, answer, _ = _call(app, "POST", "/recommend", json.dumps({"items": items}).encode())
    assert status == 200 and seen == [7]  # the request's 7 rows, not the file's
    assert len(run.history.users) == 40


def test_a_run_folder_cannot_point_the_server_at_another_checkpoint(runs, tmp_path):
    copy = tmp_path / "ease"
    shutil.copytree(runs["ease"], copy)
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    saved["ckpt_path"] = str(runs["sasrec"] / "checkpoints" / "best.ckpt")
    (copy / "config.yaml").write_text(yaml.safe_dump(saved))
    run = api.load_run(copy)
    assert run.checkpoint == copy / "checkpoints" / "refit.ckpt"  # the run's own
    assert type(run.model).__name__ == "EASE"
    own = lightrec.load_run(runs["ease"]).recommend(k=5)["item"].to_numpy()
    assert np.array_equal(run.recommend(k=5)["item"].to_numpy(), own)


def _blocked(run, name: str, monkeypatch):
    """``run``'s scoring method ``name`` held until the returned event is set (the model is
    busy), with the sizes of the batches it scored."""
    release, sizes = threading.Event(), []
    real = getattr(run, name)

    def held(*args, **kw):
        release.wait(timeout=30)
        sizes.append(len(args[0]))
        return real(*args, **kw)

    monkeypatch.setattr(run, name, held)
    return release, sizes


def test_each_request_of_a_batch_is_answered_as_it_would_be_alone(runs, monkeypatch):
    """Issue 40.1: a batch is scored at its largest k; a heavy history asking few items and
    a light one asking many both succeed together, each with its answer alone."""
    run = lightrec.load_run(runs["ease"])
    app = serve.create_app(run, max_batch=8)
    ids = [str(i) for i in run.item_ids]
    n = len(ids)
    heavy = {"items": ids[: n - 5], "k": 3}  # 5 unseen items: k=3 fits, k=n-1 would not
    light = {"items": ids[:1], "k": n - 1}
    bodies = [heavy, light] * 4
    release, sizes = _blocked(run, "top_of_histories", monkeypatch)

    async def scenario():
        sent = [json.dumps(b).encode() for b in bodies]
        tasks = [asyncio.create_task(_request(app, "POST", "/recommend", b)) for b in sent]
        await asyncio.sleep(0.2)
        release.set()
        return await asyncio.gather(*tasks)

    answers = asyncio.run(scenario())
    assert max(sizes) > 1  # scored together
    for body, (status, answer, _) in zip(bodies, answers, strict=True):
        assert status == 200, answer
        frame = pd.DataFrame({"user": 0, "item": body["items"]})
        alone = run.recommend_histories(frame, body["k"])
        assert answer["items"] == alone["item"].tolist()


def test_a_batch_that_fails_is_scored_again_one_by_one(runs, monkeypatch):
    """Issue 40.1: only the request that fails alone fails; its neighbours are answered."""
    run = lightrec.load_run(runs["ease"])
    app = serve.create_app(run, max_batch=8)
    ids = [str(i) for i in run.item_ids]
    release, _ = _blocked(run, "top_of_histories", monkeypatch)
    real = run.top_of_histories

    def poisoned(histories, k, **kw):  # a history holding the first item breaks any batch
        if any(0 in h for h, _ in histories):
            raise RuntimeError("a bad row")
        return real(histories, k, **kw)

    monkeypatch.setattr(run, "top_of_histories", poisoned)
    bodies = [{"items": ids[1:3], "k": 2}, {"items": ids[:1], "k": 2}, {"items": ids[4:6]}]

    async def scenario():
        sent = [json.dumps(b).encode() for b in bodies]
        tasks = [asyncio.create_task(_request(app, "POST", "/recommend", b)) for b in sent]
        await asyncio.sleep(0.2)
        release.set()
        return await asyncio.gather(*tasks)

    statuses = [status for status, _, _ in asyncio.run(scenario())]
    assert statuses == [200, 500, 200]


def test_a_cancelled_request_does_not_fail_its_batch(runs, monkeypatch):
    """Issue 40.2: a client that went away (its task cancelled while it waited) is left out
    of the batch; the others are answered."""
    run = lightrec.load_run(runs["ease"])
    app = serve.create_app(run, max_batch=8)
    release, sizes = _blocked(run, "top_of_histories", monkeypatch)
    first = [str(run.item_ids[0])]

    async def scenario():
        body = json.dumps({"items": first, "k": 3}).encode()
        blocker = asyncio.create_task(_request(app, "POST", "/recommend", body))
        await asyncio.sleep(0.2)  # the model is busy with the first
        waiting = [asyncio.create_task(_request(app, "POST", "/recommend", body)) for _ in range(4)]
        await asyncio.sleep(0.1)
        waiting[1].cancel()
        await asyncio.sleep(0.1)
        release.set()
        done = await asyncio.gather(blocker, *waiting, return_exceptions=True)
        return done

    done = asyncio.run(scenario())
    assert isinstance(done[2], asyncio.CancelledError)
    assert [d[0] for n, d in enumerate(done) if n != 2] == [200, 200, 200, 200]
    assert sum(sizes) == 4  # the cancelled one was never scored


def test_dates_parse_off_the_event_loop(runs, monkeypatch):
    """Issue 40.3: a history's times are parsed in a worker thread, so /health is never
    queued behind a long list of dates."""
    run = lightrec.load_run(runs["sasrec"])
    app = serve.create_app(run)
    threads = []
    real = serve.in_time_order

    def watched(*args):
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(serve, "in_time_order", watched)
    ids = [str(i) for i in run.item_ids[:3]]
    body = {"items": ids, "times": ["3 March 1995 4:05pm", "1 March 1995", "2 March 1995"]}
    status, answer, _ = _call(app, "POST", "/recommend", json.dumps(body).encode())
    assert status == 200, answer
    assert threads and threads[0] is not threading.main_thread()


def test_a_flood_past_the_queue_gets_503_with_retry_after(runs, monkeypatch):
    """Issue 40.4: past --max-queue waiting requests, a 503 with Retry-After, not a queue
    that grows without end; the queued ones are answered."""
    run = lightrec.load_run(runs["ease"])
    app = serve.create_app(run, max_batch=2, max_queue=4)
    release, _ = _blocked(run, "top_of_histories", monkeypatch)
    headers: list[dict] = []

    async def request(body: bytes):
        sent: dict = {}

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                headers.append(dict(message.get("headers", [])))

        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "POST",
            "path": "/recommend",
            "raw_path": b"/recommend",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
            "scheme": "http",
            "server": ("test", 80),
            "client": ("test", 1),
            "root_path": "",
        }
        await app(scope, receive, send)
        return sent["status"]

    async def scenario():
        body = json.dumps({"items": [str(run.item_ids[0])], "k": 3}).encode()
        first = asyncio.create_task(request(body))  # taken by the scoring thread
        await asyncio.sleep(0.2)
        flood = [asyncio.create_task(request(body)) for _ in range(12)]
        await asyncio.sleep(0.2)
        release.set()
        return [await first, *await asyncio.gather(*flood)]

    statuses = asyncio.run(scenario())
    assert statuses.count(200) == 5 and statuses.count(503) == 8  # 1 scoring + 4 queued
    assert any(h.get(b"retry-after") == b"1" for h in headers)
