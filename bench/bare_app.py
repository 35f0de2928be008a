"""The ceiling of the stack: a bare FastAPI ``POST /predict`` that parses the same body as ours.

``{"instances": [[...64 floats...], ...]}`` is validated by a pydantic model
(``instances: list[list[float]]``) and the answer is a constant dict: no model, no NumPy, no
middleware. ``bench/bench_serving.py`` serves it with the same uvicorn settings as
``python -m service`` (1 worker, uvloop/httptools as installed, access log off)::

    python -m uvicorn --app-dir bench bare_app:app --port 8001 --no-access-log
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

__all__ = ["PredictRequest", "app"]

ANSWER: dict[str, Any] = {
    "model": "bare",
    "version": 1,
    "classes": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    "probabilities": [[0.1] * 10],
    "predictions": [0],
}


class PredictRequest(BaseModel):
    instances: list[list[float]]


app = FastAPI(title="bare")


@app.post("/predict")
async def predict(request: PredictRequest) -> dict[str, Any]:
    """Parse and validate the body; answer a constant."""
    return ANSWER
