"""Group commit: requests that queue while one batch is being made durable go in the next.

Threads submit jobs; the first to find nobody leading becomes the leader, takes every queued
job (up to ``max_batch``), runs them as one batch, and hands each its outcome. Jobs submitted
meanwhile wait; when the leader is done, one of them leads the next batch. So the cost of
making a batch durable (one ``fdatasync`` of the update log, see :mod:`model.store`) is paid
once per batch instead of once per job, and a job never waits for more than the batch ahead of
it and its own.

The batch function decides what a job's outcome is: it must set :attr:`Job.result` or
:attr:`Job.error` for each job it was given (an exception escaping it becomes the error of
every job left without an outcome).

``hold`` (optional) is what a batch must hold while it runs, e.g. a lock shared with other
processes: the leader takes it *before* taking the queued jobs, so every job that queued while
it waited (for another process's batch to finish) goes in its batch. Without it, the jobs that
arrive during that wait would wait for a batch of their own: with two processes taking turns
on one lock, batches would be about half as large and syncs per job about twice as many.
Should taking ``hold`` fail, every job queued at that moment fails with its error.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["GroupCommit", "Job"]

T = TypeVar("T")


@dataclass(eq=False)
class Job(Generic[T]):
    """One request in a batch: what was asked, and what came of it."""

    request: T
    result: Any = None
    error: BaseException | None = None
    done: bool = False
    # Set when the job is done, or when it is handed the lead of the next batch.
    wake: threading.Event = field(default_factory=threading.Event, repr=False)

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit(Generic[T]):
    """Runs submitted requests in batches, one batch at a time, in the order they came.

    Only the threads concerned are woken: each job of a finished batch, and the first job
    still queued, which leads the next batch."""

    def __init__(
        self,
        run: Callable[[list[Job[T]]], None],
        *,
        max_batch: int = 64,
        hold: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._run = run
        self._hold = hold or contextlib.nullcontext
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[Job[T]] = []
        self._leading = False
        self.batches = 0  # how many batches ran (for tests and figures)

    def submit(self, request: T) -> Any:
        """Run ``request`` in the next batch; return its result or raise its error."""
        job = Job(request)
        with self._lock:
            self._queue.append(job)
            lead = not self._leading
            self._leading = True
        if not lead:
            job.wake.wait()
            if job.done:
                return job.outcome()
            # Handed the lead: this thread runs the next batch.
        while True:
            batch: list[Job[T]] = []
            try:
                with self._hold():
                    batch = self._take()
                    self._run(batch)
            except BaseException as exc:
                if not batch:  # ``hold`` could not be taken: the queued jobs fail with it
                    batch = self._take()
                for queued in batch:
                    if queued.error is None and queued.result is None:
                        queued.error = exc
            with self._lock:
                for queued in batch:
                    queued.done = True
                self.batches += 1
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._leading = False
            for queued in batch:
                queued.wake.set()
            if job.done:
                if successor is not None and successor is not job:
                    successor.wake.set()  # the lead passes on
                return job.outcome()
            # This job did not fit in the batch: lead the next one too.

    def _take(self) -> list[Job[T]]:
        """The next batch: the oldest queued jobs, up to ``max_batch``."""
        with self._lock:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
        return batch
