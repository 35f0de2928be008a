"""The live model holder without HTTP: reload, serialized concurrent updates, consistent
snapshots for readers, and the rolling prequential window."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model import LoadedModel, LocalArtifactStore, ModelRepository, StepReport
from model.errors import InvalidParameterError, NonFiniteError
from model.prequential import PrequentialWindow
from model.validation import check_labels
from service.errors import NoModelError
from service.runtime import Runtime

from .helpers import dataset, fitted, repository


def runtime_on(store: Path, name: str | None = "iris", **kwargs: int) -> Runtime:
    return Runtime(ModelRepository(LocalArtifactStore(store)), name, **kwargs)


def minibatch(seed: int, size: int = 5) -> tuple[np.ndarray, list[str]]:
    ds = dataset("iris")
    index = np.random.default_rng(seed).choice(ds.n_samples, size=size, replace=False)
    return np.asarray(ds.X[index], dtype=np.float64), ds.y[index].tolist()


def test_an_empty_store_has_nothing_to_serve(store: Path) -> None:
    runtime = runtime_on(store, None)
    assert runtime.refresh() is False
    assert runtime.current is None and runtime.name is None
    with pytest.raises(NoModelError, match="no model is loaded"):
        runtime.require()
    with pytest.raises(NoModelError):
        runtime.update(*minibatch(0))


def test_refresh_picks_up_versions_written_by_another_repository(iris_store: Path) -> None:
    runtime = runtime_on(iris_store, None)
    assert runtime.refresh() is True
    assert runtime.current is not None and runtime.current.version == 1
    assert runtime.name == "iris"
    assert runtime.refresh() is False  # nothing new

    other = repository(iris_store)  # a second process, in effect
    written = other.update("iris", *minibatch(1))
    assert written.model.version == 2
    first = runtime.current
    assert runtime.refresh() is True
    assert runtime.current.version == 2
    assert first.version == 1  # the old snapshot was swapped out, not edited
    fresh = repository(iris_store).load("iris")
    assert np.array_equal(runtime.current.estimator.state_.weights, fresh.estimator.state_.weights)
    assert np.array_equal(runtime.current.estimator.state_.bias, fresh.estimator.state_.bias)

    other.activate("iris", 1)
    assert runtime.refresh() is True and runtime.current.version == 1


class InterruptedLoads(ModelRepository):
    """Runs ``during_load`` once, as the next load finishes: a writer racing a reload."""

    def __init__(self, store: Path) -> None:
        super().__init__(LocalArtifactStore(store))
        self.during_load: Callable[[], object] | None = None

    def load(
        self, name: str, version: int | None = None, *, base: LoadedModel | None = None
    ) -> LoadedModel:
        loaded = super().load(name, version, base=base)
        action, self.during_load = self.during_load, None
        if action is not None:
            action()
        return loaded


def test_refresh_keeps_what_it_loaded_when_another_process_writes_meanwhile(
    iris_store: Path,
) -> None:
    interrupted = InterruptedLoads(iris_store)
    runtime = Runtime(interrupted, "iris")
    interrupted.during_load = lambda: repository(iris_store).update("iris", *minibatch(1))
    # Version 1 was active when the head was read: serve it rather than nothing.
    assert runtime.refresh() is True
    assert runtime.require().version == 1
    assert repository(iris_store).store.head("iris").active == 2
    assert runtime.refresh() is True and runtime.require().version == 2


def test_refresh_never_replaces_a_local_update_made_meanwhile(iris_store: Path) -> None:
    interrupted = InterruptedLoads(iris_store)
    runtime = Runtime(interrupted, "iris")
    assert runtime.refresh() is True
    assert repository(iris_store).update("iris", *minibatch(1)).model.version == 2
    interrupted.during_load = lambda: runtime.update(*minibatch(2))  # commits version 3
    assert runtime.refresh() is False  # its version 2 is older than the local version 3
    assert runtime.require().version == 3
    assert runtime.refresh() is False


def test_predict_refuses_rows_that_overflow_the_model(iris_store: Path) -> None:
    runtime = runtime_on(iris_store)
    runtime.refresh()
    model = runtime.require()
    X = np.array([[5.0, 3.0, 1.0, 0.2], [1e308, 1e308, 1e308, 1e308]])
    with pytest.raises(NonFiniteError, match=r"\(row 1\)") as raised:
        runtime.predict(model, X)
    assert raised.value.row == 1 and raised.value.field == "instances"
    ok = runtime.predict(model, X[:1])
    assert np.array_equal(ok.probabilities, model.estimator.predict_proba(X[:1]))
    assert ok.predictions().tolist() == model.estimator.predict(X[:1]).tolist()


def test_concurrent_updates_are_serialized_and_equal_a_sequential_replay(
    iris_store: Path,
) -> None:
    runtime = runtime_on(iris_store)
    runtime.refresh()
    threads_n, per_thread = 4, 6
    outcomes: list[tuple[int, int, int]] = []  # (version, previous_version, batch seed)
    errors: list[BaseException] = []
    record = threading.Lock()
    start = threading.Barrier(threads_n)

    def writer(worker: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                seed = 1000 * worker + i
                outcome = runtime.update(*minibatch(seed), learning_rate=0.05)
                with record:
                    outcomes.append((outcome.model.version, outcome.previous_version, seed))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    total = threads_n * per_thread
    outcomes.sort()
    assert [v for v, _, _ in outcomes] == list(range(2, total + 2))
    assert all(previous == version - 1 for version, previous, _ in outcomes)
    assert repository(iris_store).store.versions("iris") == list(range(1, total + 2))

    # The oracle: replay the batches one after another, in version order, from version 1.
    estimator = repository(iris_store).load("iris", 1).estimator
    for _, _, seed in outcomes:
        X, labels = minibatch(seed)
        estimator, _ = estimator.updated(
            X, check_labels(labels, estimator.classes_), learning_rate=0.05
        )
    current = runtime.require()
    stored = repository(iris_store).load("iris")
    assert current.version == stored.version == total + 1
    for state in (current.estimator.state_, stored.estimator.state_):
        assert np.array_equal(state.weights, estimator.state_.weights)
        assert np.array_equal(state.bias, estimator.state_.bias)
        assert state.step == estimator.state_.step
    window = runtime.prequential()
    assert window is not None and window[0] == total * 5


def test_readers_always_see_a_whole_stored_version(iris_store: Path) -> None:
    runtime = runtime_on(iris_store)
    runtime.refresh()
    done = threading.Event()
    seen: list[dict[int, tuple[bytes, bytes]]] = [{} for _ in range(3)]
    problems: list[str] = []

    def reader(index: int) -> None:
        last = 0
        while not done.is_set():
            model = runtime.current
            if model is None:
                problems.append("no model")
                return
            state = model.estimator.state_
            if model.version < last:
                problems.append(f"went back from {last} to {model.version}")
            last = model.version
            snapshot = (state.weights.tobytes(), state.bias.tobytes())
            if seen[index].setdefault(model.version, snapshot) != snapshot:
                problems.append(f"version {model.version} changed while served")
            time.sleep(0.0005)  # let the writer run

    readers = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for thread in readers:
        thread.start()
    try:
        for seed in range(15):
            runtime.update(*minibatch(seed, size=4))
    finally:
        done.set()
        for thread in readers:
            thread.join(timeout=30)
    assert not problems, problems[:5]
    versions = set().union(*(s.keys() for s in seen))
    assert len(versions) > 1
    oracle = repository(iris_store)
    for per_reader in seen:
        for version, (weights, bias) in per_reader.items():
            state = oracle.load("iris", version).estimator.state_
            assert weights == state.weights.tobytes() and bias == state.bias.tobytes()


def test_pinned_versions_are_cached_and_bounded(iris_store: Path) -> None:
    runtime = runtime_on(iris_store, pinned_cache_size=2)
    runtime.refresh()
    for seed in range(4):
        runtime.update(*minibatch(seed))
    assert runtime.require().version == 5
    assert runtime.model_for(None) is runtime.current
    assert runtime.model_for(5) is runtime.current
    first = runtime.model_for(1)
    assert first.version == 1 and runtime.is_cached(1)
    assert runtime.model_for(1) is first
    runtime.model_for(2)
    runtime.model_for(3)
    assert not runtime.is_cached(1) and runtime.is_cached(2) and runtime.is_cached(3)
    again = runtime.model_for(1)
    assert again is not first
    assert np.array_equal(again.estimator.state_.weights, first.estimator.state_.weights)


def test_a_named_model_is_served_even_among_several(iris_store: Path) -> None:
    repository(iris_store).save(fitted("digits"), "digits")
    with pytest.raises(InvalidParameterError, match="several models"):
        runtime_on(iris_store, None).refresh()
    runtime = runtime_on(iris_store, "digits")
    assert runtime.refresh() is True and runtime.require().name == "digits"


# ------------------------------------------------------------------ rolling window
def report(n: int, loss: float, accuracy: float) -> StepReport:
    return StepReport(n=n, loss_before=loss, accuracy_before=accuracy, loss_after=0.0)


def test_rolling_window_arithmetic() -> None:
    rolling = PrequentialWindow(rows=10)
    assert rolling.figures() is None
    rolling.add(report(4, 1.0, 0.5))
    assert rolling.figures() == (4, 0.5, 1.0)
    rolling.add(report(4, 2.0, 0.25))
    assert rolling.figures() == (8, 0.375, 1.5)
    rolling.add(report(4, 3.0, 1.0))  # 12 rows; without the oldest only 8 < 10: keep it
    assert rolling.figures() == (12, 1.75 / 3, 2.0)
    rolling.add(report(4, 4.0, 0.0))  # 16 rows; the oldest can go (12 remain >= 10)
    assert rolling.figures() == (12, 1.25 / 3, 3.0)
    rolling.add(report(20, 0.5, 1.0))  # one batch over the window replaces all older ones
    assert rolling.figures() == (20, 1.0, 0.5)
    rolling.add(report(2, 1.5, 0.5))  # 2 rows alone are < 10: the big batch stays
    assert rolling.figures() == pytest.approx((22, 21 / 22, 13 / 22))


@settings(max_examples=60, deadline=None)
@given(
    window=st.integers(1, 30),
    batches=st.lists(
        st.tuples(
            st.integers(1, 12),
            st.floats(0, 20, allow_nan=False),
            st.integers(0, 12),
        ),
        min_size=1,
        max_size=25,
    ),
)
def test_rolling_window_is_the_shortest_suffix_of_whole_batches_holding_the_window(
    window: int, batches: list[tuple[int, float, int]]
) -> None:
    rolling = PrequentialWindow(window)
    reports = []
    for n, loss, correct in batches:
        reports.append(report(n, loss, min(correct, n) / n))
        rolling.add(reports[-1])
        kept: list[StepReport] = []
        for r in reversed(reports):  # the oracle, from scratch each time
            kept.append(r)
            if sum(k.n for k in kept) >= window:
                break
        rows = sum(k.n for k in kept)
        snapshot = rolling.figures()
        assert snapshot is not None and snapshot[0] == rows
        accuracy = sum(k.accuracy_before * k.n for k in kept) / rows
        loss_mean = sum(k.loss_before * k.n for k in kept) / rows
        assert snapshot[1] == pytest.approx(accuracy, rel=1e-9, abs=1e-9)
        assert snapshot[2] == pytest.approx(loss_mean, rel=1e-9, abs=1e-9)
