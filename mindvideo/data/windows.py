"""Sliding windows pairing fMRI frames t+offset .. t+offset+w-1 with the clip at t."""

from __future__ import annotations

from typing import Literal

import numpy as np

Edge = Literal["drop", "clamp"]


def window_indices(
    n_tr: int, window: int, offset: int = 0, edge: Edge = "drop"
) -> tuple[np.ndarray, np.ndarray]:
    """Clip indices and the volume indices of each clip's window.

    The window looks forward (as MinD-Video's: the BOLD response lags the stimulus). With
    edge="drop", clips whose window leaves the run are dropped; with "clamp", indices are
    clamped to the run, repeating its first or last volume.
    Returns (clips (n,), volumes (n, window)).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if edge not in ("drop", "clamp"):
        raise ValueError(f"edge must be 'drop' or 'clamp', got {edge!r}")
    clips = np.arange(n_tr)
    vols = clips[:, None] + offset + np.arange(window)[None]
    if edge == "drop":
        keep = (vols[:, 0] >= 0) & (vols[:, -1] < n_tr)
        return clips[keep], vols[keep]
    return clips, np.clip(vols, 0, n_tr - 1)


def make_windows(run: np.ndarray, volumes: np.ndarray) -> np.ndarray:
    """Gather windows from one run: run (T, V), volumes (n, w) -> (n, w, V)."""
    return run[volumes]
