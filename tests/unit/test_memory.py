"""A stage's peak memory (harness/memory.py): each window reports its own peak, not the
process's since it started, and leaves out what it cannot reset."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from harness import memory
from harness.memory import peak_memory

MIB = 2**20

linux = pytest.mark.skipif(sys.platform != "linux", reason="VmHWM and clear_refs are Linux's")


@linux
def test_each_window_reports_its_own_peak():
    first = peak_memory()
    big = np.ones(512 * MIB, np.uint8)  # touched: resident
    big_peak = first.gib()["rss"]
    del big  # a large array is unmapped when freed
    second = peak_memory()
    small = np.ones(16 * MIB, np.uint8)
    small_peak = second.gib()["rss"]
    assert small[-1] == 1
    assert big_peak - small_peak > 0.4  # the 0.5 GiB array counts in the first window only


def test_a_peak_that_cannot_be_reset_is_left_out(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "_CLEAR", tmp_path / "missing" / "clear_refs")
    assert "rss" not in peak_memory().gib()
    monkeypatch.setattr(memory, "_STATUS", Path(tmp_path / "no-status"))
    monkeypatch.setattr(memory, "_CLEAR", tmp_path / "clear_refs")
    assert "rss" not in peak_memory().gib()  # reset, but no VmHWM to read


def _rss_mib() -> float:
    return memory.resident_bytes() / MIB


@linux
def test_a_window_starts_from_memory_in_use_not_memory_the_allocator_kept():
    """Blocks freed among live ones stay resident in the C heap until trimmed: a stage that
    follows a large one would count them in its peak. release_freed gives them back."""
    before = _rss_mib()
    blocks = [bytes(4000) for _ in range(75_000)]  # about 300 MiB of heap blocks
    kept = blocks[::50]  # live blocks spread through the heap: no trim from its top
    del blocks
    held = _rss_mib()
    memory.release_freed()
    after = _rss_mib()
    assert len(kept) == 1500
    if held - before < 200:
        pytest.skip("this allocator gave the blocks back by itself")
    assert held - after > 0.6 * (held - before)
