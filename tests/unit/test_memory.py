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
