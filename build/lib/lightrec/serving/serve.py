"""``python -m lightrec serve RUN_DIR [--host 127.0.0.1] [--port 8000]``: a finished run's
model behind HTTP (FastAPI on uvicorn), loaded once.

- ``POST /recommend`` with ``{"items": ["<item id>", ...], "k": 10}`` (optional
  ``"times"``, one per item, to order a sequence model's input): the top ``k`` unseen items
  for that history, folded in without training: ``{"items": [...], "scores": [...],
  "unknown_items": n}`` (items the model does not know are ignored and counted).
- ``GET /users/{id}/recommendations?k=10``: a user of the run's data file, from their full
  history there (the lists of the run's submission).
- ``GET /health``: the run and its model.

Bad input is a 4xx whose body is ``{"error": "<one sentence>"}``: an unknown user (404), a
history that is empty, holds no known item or more than :data:`MAX_HISTORY` items, ``k``
out of range, malformed JSON (422). Nothing in a request names a file; the server binds to
127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import threading
import warnings
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from lightrec.errors import LightrecError
from lightrec.serving.api import Run, load_run
from lightrec.utils.console import refuse

MAX_HISTORY = 10_000  # items in one request's history
MAX_K = 1_000


class HistoryRequest(BaseModel):
    """The body of ``POST /recommend``."""

    items: list[str | int] = Field(max_length=MAX_HISTORY)
    k: int = Field(10, ge=1, le=MAX_K)
    times: list[float | int | str] | None = None


def create_app(run: Run) -> FastAPI:
    """The FastAPI application serving ``run`` (its model scores one request at a time)."""
    app = FastAPI(title="lightrec", version="1")
    lock = threading.Lock()  # one scoring at a time: the model's threads use every core
    run.history  # noqa: B018 - read the run's data file now, not on the first request
    n_items = len(run.item_ids)

    def refuse(status: int, sentence: str) -> JSONResponse:
        return JSONResponse({"error": sentence}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            why = first.get("ctx", {}).get("error", "")
            return refuse(422, f"the body is not valid JSON ({why})" if why else "bad JSON")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        why = str(first.get("msg", "invalid request"))
        return refuse(422, f"{where}: {why}" if where else why)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return refuse(exc.status_code, str(exc.detail))

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "run": str(run.path),
            "model": type(run.model).__name__,
            "checkpoint": run.checkpoint.name,
            "items": n_items,
            "users": len(run.history.users),
        }

    @app.post("/recommend")
    def recommend(body: HistoryRequest) -> Any:
        if not body.items:
            return refuse(422, "items is empty: give the history as a list of item ids")
        if body.k > n_items - 1:
            return refuse(422, f"k={body.k} is more than the {n_items - 1} items one can get")
        if body.times is not None and len(body.times) != len(body.items):
            return refuse(422, "times must give one time per item")
        frame = pd.DataFrame({"user": "request", "item": [str(i) for i in body.items]})
        if body.times is not None:
            frame["time"] = body.times
        known = run.known_items(frame["item"].to_numpy(dtype=object))
        if not known.any():
            return refuse(422, "none of the history's items is known to the model")
        if body.k > n_items - int(known.sum()):
            return refuse(422, f"k={body.k} is more than the items this history has not seen")
        try:
            with lock, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # unknown items are counted in the answer
                recs = run.recommend_histories(frame, body.k)
        except LightrecError as e:
            return refuse(422, str(e))
        return {
            "items": recs["item"].tolist(),
            "scores": [float(s) for s in recs["score"]],
            "unknown_items": int((~known).sum()),
        }

    @app.get("/users/{user}/recommendations")
    def user_recommendations(user: str, k: int = Query(10, ge=1, le=MAX_K)) -> Any:
        if k > n_items - 1:
            return refuse(422, f"k={k} is more than the {n_items - 1} items one can get")
        if not run.known_users(np.asarray([user], dtype=object)).all():
            return refuse(404, f"user {user!r} is not in the run's data file")
        try:
            with lock:
                recs = run.recommend(users=[user], k=k)
        except LightrecError as e:
            return refuse(422, str(e))
        return {"items": recs["item"].tolist(), "scores": [float(s) for s in recs["score"]]}

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
    a = ap.parse_args(argv)
    try:
        run = load_run(a.run_dir, device=a.device)
        app = create_app(run)
    except LightrecError as e:
        return refuse(e)
    import uvicorn

    print(f"serving {run.path} ({type(run.model).__name__}) on http://{a.host}:{a.port}")
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
    return 0
