"""The canonical double-gamma haemodynamic response function and its TR-level lag."""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln


def double_gamma(
    t: np.ndarray,
    peak_s: float | np.ndarray = 5.0,
    undershoot_delay_s: float = 10.0,
    undershoot_ratio: float = 1 / 6,
    dispersion_s: float = 1.0,
) -> np.ndarray:
    """Double-gamma HRF sampled at times `t` (seconds), peak normalised to 1.

    The positive lobe is a gamma density with shape `peak_s / dispersion_s + 1` and scale
    `dispersion_s`, whose mode is exactly `peak_s`; the undershoot is a gamma density peaking
    `undershoot_delay_s` later, scaled by `undershoot_ratio` (SPM's canonical form). `peak_s`
    may be an array (one HRF per voxel): the result then has shape `t.shape + peak_s.shape`.
    """
    t = np.asarray(t, dtype=np.float64)
    peak = np.asarray(peak_s, dtype=np.float64)
    tt = t.reshape(t.shape + (1,) * peak.ndim)
    a1 = peak / dispersion_s + 1.0
    a2 = (peak + undershoot_delay_s) / dispersion_s + 1.0

    def gamma_pdf(x: np.ndarray, shape: np.ndarray) -> np.ndarray:
        x = np.maximum(x, 1e-12) / dispersion_s
        return np.exp((shape - 1) * np.log(x) - x - gammaln(shape)) / dispersion_s

    h = gamma_pdf(tt, a1) - undershoot_ratio * gamma_pdf(tt, a2)
    h = np.where(tt > 0, h, 0.0)
    return h / h.max(axis=0, keepdims=True)


def tr_lag(peak_s: float | np.ndarray, tr: float, max_lag: int = 8, dt: float = 0.05) -> np.ndarray:
    """The lag (whole TRs) at which a volume responds most to a stimulus lasting one TR.

    Volume k averages the BOLD signal over [k*TR, (k+1)*TR); the clip at t is a boxcar over
    [t*TR, (t+1)*TR). The response of volume t+L to clip t is the HRF integrated against the
    triangle that two boxcars make; this returns the argmax over L = 0..max_lag.
    """
    peak = np.asarray(peak_s, dtype=np.float64)
    t = np.arange(0.0, (max_lag + 2) * tr + 32.0, dt)
    h = double_gamma(t, peak)  # (time, *peak.shape)
    boxcar = np.ones(int(round(tr / dt)))
    bold = np.apply_along_axis(lambda col: np.convolve(col, boxcar)[: len(t)], 0, h)
    per_tr = int(round(tr / dt))
    vols = np.stack(
        [bold[L * per_tr : (L + 1) * per_tr].mean(axis=0) for L in range(max_lag + 1)], axis=0
    )
    return np.argmax(vols, axis=0)
