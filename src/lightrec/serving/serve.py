"""``python -m lightrec serve RUN_DIR [--host 127.0.0.1] [--port 8000]``: a finished run's
model behind HTTP (FastAPI on uvicorn), loaded once.

- ``POST /recommend`` with ``{"items": ["<item id>", ...], "k": 10}`` (optional
  ``"times"``, one per item, to order a sequence model's input): the top ``k`` unseen items
  for that history, folded in without training: ``{"items": [...], "scores": [...],
  "unknown_items": n}`` (items the model does not know are ignored and counted).
- ``GET /users/{id}/recommendations?k=10``: a user of the run's data file, from their full
  history there (the lists of the run's submission).
- ``GET /health``: the run and its model; it never waits behind scoring.

What depends only on the run is built when the server starts: the item and user indexes,
every known user's input in the model's view, the scorer. A request does the work of its
own history: its ids looked up, its input built, and the model. Requests that arrive while
the model is busy are scored together, in one forward pass (``--max-batch``), by one
scoring thread: the model's threads already use every core.

Every refusal is ``{"error": "<one sentence>"}``: an unknown user (404), a body over
:data:`MAX_BODY_BYTES` (413, before it is parsed), a history that is empty, holds no known
item or more than :data:`MAX_HISTORY` items, an id over :data:`MAX_ID_CHARS` characters,
``k`` out of range, malformed JSON (422), more than ``--max-queue`` requests waiting (503
with ``Retry-After``); an unexpected failure is a 500 in the same form. A request is
answered as it would be alone: a batch that fails is scored again one request at a time, a
request whose client went away is left out, and dates in ``times`` parse off the event loop.
Nothing in a request names a file; the server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lightrec.data.interactions import parse_times
from lightrec.errors import LightrecError
from lightrec.serving.api import Run, load_run
from lightrec.utils.console import refuse

log = logging.getLogger(__name__)

MAX_HISTORY = 10_000  # items in one request's history
MAX_K = 1_000
MAX_ID_CHARS = 256  # an item id (or a time written as text) in a request
MAX_BODY_BYTES = 2 << 20  # a history of MAX_HISTORY ids and times fits with room to spare
MAX_BATCH = 32  # requests scored in one forward pass, at most
MAX_QUEUE = 256  # requests waiting for the scoring thread; past it a 503 with Retry-After

Id = Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)] | int


class HistoryRequest(BaseModel):
    """The body of ``POST /recommend``."""

    items: list[Id] = Field(max_length=MAX_HISTORY)
    k: int = Field(10, ge=1, le=MAX_K)
    times: list[float | int | Annotated[str, StringConstraints(max_length=64)]] | None = Field(
        None, max_length=MAX_HISTORY
    )


class BodyLimit:
    """Refuses a body over ``limit`` bytes before it is parsed: at once when its
    Content-Length says so, else as soon as the bytes received pass the limit (the app then
    sees the client gone, and its own answer goes nowhere)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        received, refused = 0, False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                refused = True
                await _too_large(self.limit)(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counted, unless_refused)
        except Exception:
            if not refused:  # the app's failure at the cut-off body is ours to drop
                raise


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"error": f"the request body is over {limit:,} bytes: send a shorter history"},
        status_code=413,
    )


@dataclass
class Job:
    """One request waiting for the scoring thread."""

    k: int
    items: np.ndarray | None = None  # a history: known item positions, in time order
    user_row: int | None = None  # or a known user
    done: Future = field(default_factory=Future)


class Scorer:
    """The one thread that runs the model: takes the waiting requests, up to ``max_batch``,
    scores the histories together and the known users together, and answers each."""

    def __init__(self, run: Run, max_batch: int, max_queue: int = MAX_QUEUE) -> None:
        self.run, self.max_batch, self.max_queue = run, max_batch, max_queue
        self.lock = threading.Lock()
        self.waiting = 0  # requests queued and not yet taken by the scoring thread
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="lightrec-scorer", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Future:
        """Queue ``job``; refused (:class:`Busy`) when ``max_queue`` requests already wait."""
        with self.lock:
            if self.waiting >= self.max_queue:
                raise Busy(f"{self.waiting} requests are waiting: try again shortly")
            self.waiting += 1
        self.jobs.put(job)
        return job.done

    def _loop(self) -> None:
        while True:
            batch = [self.jobs.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            with self.lock:
                self.waiting -= len(batch)
            # a request whose client went away (its future cancelled) is left out; the rest
            # can no longer be cancelled, so each gets its answer
            batch = [j for j in batch if j.done.set_running_or_notify_cancel()]
            histories = [j for j in batch if j.items is not None]
            users = [j for j in batch if j.user_row is not None]
            for group, score in ((histories, self._histories), (users, self._users)):
                if group:
                    self._answer(group, score)

    @staticmethod
    def _answer(group: list[Job], score: Callable[[list[Job]], list[Any]]) -> None:
        """Each job of ``group`` answered as it would be alone: scored together, and where
        that fails, one by one, so that only a request that fails alone fails."""
        try:
            results = score(group)
        except Exception as e:  # noqa: BLE001 - answered, the thread goes on
            if len(group) == 1:
                group[0].done.set_exception(e)
                return
            for j in group:  # only a request that fails alone fails
                Scorer._answer([j], score)
            return
        for j, result in zip(group, results, strict=True):
            j.done.set_result(result)

    def _histories(self, jobs: list[Job]) -> list[Any]:
        # scored at the batch's largest k; each row cut to its own k, which its own unseen
        # items fill (the endpoint checked that), whatever the other rows leave at -inf
        k = max(j.k for j in jobs)
        histories = [(j.items, np.arange(len(j.items))) for j in jobs if j.items is not None]
        items, scores = self.run.top_of_histories(histories, k, strict=len(jobs) == 1)
        return [_own(items[n], scores[n], j.k) for n, j in enumerate(jobs)]

    def _users(self, jobs: list[Job]) -> list[Any]:
        k = max(j.k for j in jobs)
        rows = np.array([j.user_row for j in jobs], dtype=np.int64)
        items, scores = self.run.top_of_users(rows, k, strict=len(jobs) == 1)
        return [_own(items[n], scores[n], j.k) for n, j in enumerate(jobs)]


class Busy(Exception):
    """The queue of waiting requests is full (a 503 with Retry-After)."""


def _own(items: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A row cut to its request's ``k``, refused if the row cannot fill it."""
    if np.isinf(scores[:k]).any():
        raise LightrecError(f"k={k} is more than the items this history has not seen")
    return items[:k], scores[:k]


def in_time_order(positions: np.ndarray, times: list | None) -> np.ndarray:
    """A history's item positions in time order (file order without times; equal times in
    file order): the order a sequence model reads, for any clock the times are on.

    >>> in_time_order(np.array([7, 8, 9]), [3, 1, 2]).tolist()
    [8, 9, 7]
    """
    if times is None:
        return positions
    try:
        when = parse_times(pd.Series(times), "the request", "times")
    except LightrecError:
        raise LightrecError("times must be numbers or dates, one per item") from None
    return positions[np.argsort(when, kind="stable")]


def create_app(run: Run, max_batch: int = MAX_BATCH, max_queue: int = MAX_QUEUE) -> FastAPI:
    """The FastAPI application serving ``run``."""
    app = FastAPI(title="lightrec", version="1")
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    n_items = len(run.item_ids)
    n_users = len(run.history.users)  # the run's data file, read now, not on a request
    run.top_of_users(np.array([0]), 1)  # every known user's input built now
    scorer = Scorer(run, max_batch, max_queue)
    ids = np.asarray(run.item_ids, dtype=object)

    def refused(status: int, sentence: str) -> JSONResponse:
        return JSONResponse({"error": sentence}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            why = first.get("ctx", {}).get("error", "")
            return refused(422, f"the body is not valid JSON ({why})" if why else "bad JSON")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        why = str(first.get("msg", "invalid request"))
        return refused(422, f"{where}: {why}" if where else why)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return refused(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return refused(500, f"internal error ({type(exc).__name__}); see the server's log")

    async def answer(job: Job) -> tuple[np.ndarray, np.ndarray]:
        return await asyncio.wrap_future(scorer.submit(job))

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "run": str(run.path),
            "model": type(run.model).__name__,
            "checkpoint": run.checkpoint.name,
            "items": n_items,
            "users": n_users,
        }

    @app.post("/recommend")
    async def recommend(body: HistoryRequest) -> Any:
        if not body.items:
            return refused(422, "items is empty: give the history as a list of item ids")
        if body.k > n_items - 1:
            return refused(422, f"k={body.k} is more than the {n_items - 1} items one can get")
        if body.times is not None and len(body.times) != len(body.items):
            return refused(422, "times must give one time per item")
        positions = run.item_positions([str(i) for i in body.items])
        try:  # dates parse off the event loop: /health never waits behind them
            ordered = await asyncio.to_thread(in_time_order, positions, body.times)
        except LightrecError as e:
            return refused(422, str(e))
        known = ordered[ordered >= 0]
        if not len(known):
            return refused(422, "none of the history's items is known to the model")
        if body.k > n_items - len(np.unique(known)):  # repeats are one item seen
            return refused(422, f"k={body.k} is more than the items this history has not seen")
        try:
            items, scores = await answer(Job(body.k, items=known))
        except LightrecError as e:
            return refused(422, str(e))
        return {
            "items": ids[items].tolist(),
            "scores": scores.tolist(),
            "unknown_items": int((positions < 0).sum()),
        }

    @app.get("/users/{user}/recommendations")
    async def user_recommendations(user: str, k: int = Query(10, ge=1, le=MAX_K)) -> Any:
        if k > n_items - 1:
            return refused(422, f"k={k} is more than the {n_items - 1} items one can get")
        row = int(run.user_rows([user])[0])
        if row < 0:
            return refused(404, f"user {user!r} is not in the run's data file")
        try:
            items, scores = await answer(Job(k, user_row=row))
        except LightrecError as e:
            return refused(422, str(e))
        return {"items": ids[items].tolist(), "scores": scores.tolist()}

    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lightrec serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("run_dir", help="a finished training run folder")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    ap.add_argument(
        "--max-batch", type=int, default=MAX_BATCH, help="requests scored in one forward pass"
    )
    ap.add_argument(
        "--max-queue",
        type=int,
        default=MAX_QUEUE,
        help="requests waiting to be scored, at most; past it a 503 with Retry-After",
    )
    a = ap.parse_args(argv)
    try:
        if a.max_batch < 1:
            raise LightrecError(f"--max-batch {a.max_batch} must be at least 1")
        if a.max_queue < 1:
            raise LightrecError(f"--max-queue {a.max_queue} must be at least 1")
        run = load_run(a.run_dir, device=a.device)
        app = create_app(run, a.max_batch, a.max_queue)
    except LightrecError as e:
        return refuse(e)
    import uvicorn

    print(f"serving {run.path} ({type(run.model).__name__}) on http://{a.host}:{a.port}")
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
    return 0
