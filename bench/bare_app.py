"""The ceiling of the stack: bare FastAPI routes that parse the same bodies as ours.

``{"instances": [[...64 floats...], ...]}`` is validated by a pydantic model
(``instances: list[list[float]]``) and the answer is a constant dict: no model, no NumPy, no
middleware. ``bench/bench_serving.py`` serves it with the same uvicorn settings as
``python -m service`` (1 worker, uvloop/httptools as installed, access log off)::

    python -m uvicorn --app-dir bench bare_app:app --port 8001 --no-access-log

``POST /train`` (``bench/bench_commit.py --bare``) parses ``{"instances": [[...]], "labels":
[...]}`` the same way and makes one durable write per request: the body's bytes appended to the
file named by ``BARE_TRAIN_LOG`` and ``os.fdatasync`` (one per request, no group commit), in
FastAPI's thread pool (a plain ``def`` route), before answering a constant. ``POST /train-parse``
parses and answers without writing: the stack's own ceiling for that body.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

__all__ = ["PredictRequest", "TrainRequest", "app"]

ANSWER: dict[str, Any] = {
    "model": "bare",
    "version": 1,
    "classes": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    "probabilities": [[0.1] * 10],
    "predictions": [0],
}


class PredictRequest(BaseModel):
    instances: list[list[float]]


class TrainRequest(BaseModel):
    instances: list[list[float]]
    labels: list[int | str]


TRAIN_ANSWER: dict[str, Any] = {"model": "bare", "version": 2, "parent": 1, "rows": 32}

app = FastAPI(title="bare")
_log_fd: int | None = None


def _log() -> int:
    global _log_fd
    if _log_fd is None:
        path = os.environ.get("BARE_TRAIN_LOG")
        if not path:
            raise RuntimeError("POST /train needs BARE_TRAIN_LOG (a file to append to)")
        _log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    return _log_fd


@app.post("/predict")
async def predict(request: PredictRequest) -> dict[str, Any]:
    """Parse and validate the body; answer a constant."""
    return ANSWER


@app.post("/train")
def train(request: TrainRequest) -> dict[str, Any]:
    """Parse and validate the body; append it to the log and fdatasync; answer a constant."""
    fd = _log()
    os.write(fd, request.model_dump_json().encode())
    os.fdatasync(fd)
    return TRAIN_ANSWER


@app.post("/train-parse")
async def train_parse(request: TrainRequest) -> dict[str, Any]:
    """Parse and validate the body; answer a constant (nothing written)."""
    return TRAIN_ANSWER
