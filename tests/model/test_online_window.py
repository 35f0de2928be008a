"""The prequential window read from the store: the same figures as a from-scratch pass over the
versions, in any process, at a cost that does not grow with the window or the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from model import LocalArtifactStore, ModelRepository
from model.prequential import PrequentialWindow
from tests.model.store_writer import NAME, initial_model, update_batch


class CountingStore(LocalArtifactStore):
    """The real local store, counting the version metadata it is asked for."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.meta_reads = 0

    def read_meta(self, model: str, version: int) -> dict[str, Any]:
        self.meta_reads += 1
        return super().read_meta(model, version)


def from_scratch(root: Path, rows: int) -> tuple[int, float, float] | None:
    """The oracle: every version's online figures, oldest first, through a fresh window."""
    repo = ModelRepository(LocalArtifactStore(root), keep_last=None)
    window = PrequentialWindow(rows)
    for number in LocalArtifactStore(root).versions(NAME):
        online = repo.meta(NAME, number).online
        if online is not None:
            window.add(online)
    return window.figures()


@pytest.mark.parametrize("rows", [1, 7, 1000])
def test_the_window_follows_updates_written_by_another_process(tmp_path: Path, rows: int) -> None:
    writer = ModelRepository(LocalArtifactStore(tmp_path), keep_last=None)
    writer.save(initial_model(), NAME)
    reader = ModelRepository(CountingStore(tmp_path), keep_last=None)
    assert reader.online_window(NAME, rows) is None
    for op in range(12):
        writer.update(NAME, *update_batch(worker=1, op=op))
        if op % 4 == 0:
            writer.save(initial_model(seed=op), NAME)  # offline versions carry no figures
        figures = reader.online_window(NAME, rows)
        assert figures == pytest.approx(from_scratch(tmp_path, rows), rel=1e-12), op


def test_a_scrape_reads_only_what_is_new(tmp_path: Path) -> None:
    writer = ModelRepository(LocalArtifactStore(tmp_path), keep_last=None)
    writer.save(initial_model(), NAME)
    for op in range(30):
        writer.update(NAME, *update_batch(worker=2, op=op))
    store = CountingStore(tmp_path)
    reader = ModelRepository(store, keep_last=None)
    first = reader.online_window(NAME, 10)  # about 5 of the newest updates cover 10 rows
    assert first is not None and first.rows >= 10
    assert store.meta_reads <= 10
    store.meta_reads = 0
    assert reader.online_window(NAME, 10) == first  # nothing new: nothing read
    assert store.meta_reads == 0
    for op in range(30, 33):
        writer.update(NAME, *update_batch(worker=2, op=op))
    reader.online_window(NAME, 10)
    assert store.meta_reads == 3  # the three new versions, whatever the store's size
