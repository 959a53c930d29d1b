"""The SynthCC brain model: a cortical sheet per subject, its stimulus encoding and noise.

Each hemisphere is a square sheet of vertices; data columns follow a Hilbert curve over the
sheet, so neighbouring columns are neighbouring cortex (as surface vertices are in real
data). Regions lie in bands along the sheet as in a common template, with borders warped
per subject. Visual regions are driven by the stimulus; the non-visual band only by noise.
The left hemisphere sees the right visual field and vice versa.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import scipy.fft
from scipy.ndimage import gaussian_filter

from mindvideo.data.hrf import double_gamma, tr_lag
from mindvideo.data.synth.config import BrainConfig
from mindvideo.data.synth.world import COLOURS, DIRECTIONS, SHAPES

REGIONS = ("early_visual", "colour_shape", "motion", "category", "non_visual")
# Template band of each region along the sheet's first axis (fraction of the sheet).
REGION_BANDS = {
    "early_visual": (0.00, 0.18),
    "colour_shape": (0.18, 0.26),
    "motion": (0.26, 0.33),
    "category": (0.33, 0.40),
    "non_visual": (0.40, 1.00),
}
VISUAL_REGIONS = REGIONS[:4]
HEMISPHERES = ("CORTEX_LEFT", "CORTEX_RIGHT")
EV_FEATURES = ("luminance", "contrast", "red_green", "blue_yellow")
# Share of every visual voxel's drive that follows the object's mere presence and size.
GENERIC_SHARE = 0.25


def hilbert_order(side: int) -> np.ndarray:
    """Row-major grid indices of a side x side grid, in Hilbert-curve order."""
    n = side * side
    rows = np.empty(n, dtype=np.int64)
    cols = np.empty(n, dtype=np.int64)
    for d in range(n):
        x = y = 0
        t = d
        s = 1
        while s < side:
            rx = 1 & (t // 2)
            ry = 1 & (t ^ rx)
            if ry == 0:
                if rx == 1:
                    x, y = s - 1 - x, s - 1 - y
                x, y = y, x
            x += s * rx
            y += s * ry
            t //= 4
            s *= 2
        rows[d], cols[d] = y, x
    return rows * side + cols


def _smooth_field(rng: np.random.Generator, side: int, sigma: float) -> np.ndarray:
    """A smooth random field on the sheet, zero mean and unit std: (side, side)."""
    f = gaussian_filter(rng.standard_normal((side, side)), sigma=sigma, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-12)


def _tuning(
    rng: np.random.Generator,
    side: int,
    smooth: float,
    n: int,
    rows: np.ndarray,
    cols: np.ndarray,
    sharpness: float = 1.5,
) -> np.ndarray:
    """Smoothly varying preferences over n categories, each row summing to 1: (V, n)."""
    f = np.stack([_smooth_field(rng, side, smooth) for _ in range(n)], -1)
    f = np.exp(sharpness * f[rows, cols])
    return f / f.sum(axis=1, keepdims=True)


@dataclass
class SubjectBrain:
    """Per-voxel maps of one simulated subject (cortical voxels, in data-column order)."""

    hemisphere: np.ndarray  # (V,) 0 = left, 1 = right
    vertex: np.ndarray  # (V,) row-major vertex index within its hemisphere's sheet
    row: np.ndarray  # (V,) sheet row (the template's region axis)
    col: np.ndarray  # (V,) sheet column
    region: np.ndarray  # (V,) index into REGIONS
    snr: np.ndarray  # (V,) signal std / noise std
    hrf_peak_s: np.ndarray  # (V,)
    prf_x: np.ndarray  # (V,) visual-field position in [-1, 1], NaN outside early visual
    prf_y: np.ndarray
    prf_sigma: np.ndarray
    ev_weights: np.ndarray  # (V, 4) weights of EV_FEATURES
    colour_tuning: np.ndarray  # (V, n_colours)
    shape_tuning: np.ndarray  # (V, n_shapes)
    direction_pref: np.ndarray  # (V,) radians, NaN outside motion
    baseline: np.ndarray  # (V,) raw signal level of the scanner units

    @property
    def n_voxels(self) -> int:
        return len(self.region)

    @property
    def driven(self) -> np.ndarray:
        """Truth: which voxels the stimulus drives."""
        return (self.region < REGIONS.index("non_visual")) & (self.snr > 0)

    def truth_arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def make_brain(rng: np.random.Generator, cfg: BrainConfig) -> SubjectBrain:
    """Draw one subject's individual maps on the common template."""
    side = cfg.sheet_side
    order = hilbert_order(side)
    smooth = side / 6
    parts: dict[str, list[np.ndarray]] = {}

    def put(name: str, value: np.ndarray) -> None:
        parts.setdefault(name, []).append(value)

    for hemi in range(2):
        grid_r, grid_c = np.divmod(order, side)
        u = (grid_r + 0.5) / side  # region axis
        v = (grid_c + 0.5) / side  # polar-angle axis inside early visual
        warp = _smooth_field(rng, side, side / 4)[grid_r, grid_c]
        u_warped = np.clip(u + cfg.boundary_jitter * warp, 0, 0.9999)
        region = np.full(len(order), REGIONS.index("non_visual"), dtype=np.int64)
        for k, name in enumerate(REGIONS):
            lo, hi = REGION_BANDS[name]
            region[(u_warped >= lo) & (u_warped < hi)] = k

        # Retinotopy: eccentricity grows away from the pole (u = 0), polar angle along v.
        ev_lo, ev_hi = REGION_BANDS["early_visual"]
        ecc = np.clip((u_warped - ev_lo) / (ev_hi - ev_lo), 0, 1)
        ecc = 0.05 + 1.1 * ecc**1.3 * np.exp(0.1 * _smooth_field(rng, side, smooth)[grid_r, grid_c])
        polar = (v - 0.5) * math.pi + 0.25 * _smooth_field(rng, side, smooth)[grid_r, grid_c]
        polar = np.clip(polar, -0.48 * math.pi, 0.48 * math.pi)  # stay in the hemifield
        sign = 1.0 if hemi == 0 else -1.0  # left hemisphere: right visual field
        is_ev = region == 0
        put("prf_x", np.where(is_ev, np.clip(sign * ecc * np.cos(polar), -1, 1), np.nan))
        put("prf_y", np.where(is_ev, np.clip(ecc * np.sin(polar), -1, 1), np.nan))
        put("prf_sigma", np.where(is_ev, 0.08 + 0.22 * ecc, np.nan))
        ev_w = np.stack(
            [
                1.0 + 0.3 * _smooth_field(rng, side, smooth),
                1.0 + 0.4 * _smooth_field(rng, side, smooth),
                0.8 * _smooth_field(rng, side, smooth),
                0.8 * _smooth_field(rng, side, smooth),
            ],
            axis=-1,
        )[grid_r, grid_c]
        put("ev_weights", np.where(is_ev[:, None], ev_w, 0.0))

        colour_t = _tuning(rng, side, smooth, len(COLOURS), grid_r, grid_c)
        put("colour_tuning", np.where((region == 1)[:, None], colour_t, 0.0))
        shape_t = _tuning(rng, side, smooth, len(SHAPES), grid_r, grid_c)
        weak = np.where(region == 1, 0.3, 0.0)
        put("shape_tuning", np.where((region == 3)[:, None], shape_t, weak[:, None] * shape_t))
        vec = np.stack([_smooth_field(rng, side, smooth) for _ in range(2)], -1)[grid_r, grid_c]
        put("direction_pref", np.where(region == 2, np.arctan2(vec[:, 1], vec[:, 0]), np.nan))
        put("hemisphere", np.full(len(order), hemi))
        put("vertex", order)
        put("row", grid_r)
        put("col", grid_c)
        put("region", region)

    region = np.concatenate(parts["region"])
    n = len(region)
    snr_region = np.array([cfg.snr.get(name, 0.0) for name in REGIONS])[region]
    snr = snr_region * np.exp(cfg.snr_jitter * rng.standard_normal(n))
    peak = cfg.hrf_peak_s + cfg.hrf_peak_jitter_s * rng.standard_normal(n)
    peak = np.clip(peak, 2.0, 10.0)
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return SubjectBrain(
        hemisphere=cat["hemisphere"],
        vertex=cat["vertex"],
        row=cat["row"],
        col=cat["col"],
        region=region,
        snr=snr,
        hrf_peak_s=peak,
        prf_x=cat["prf_x"],
        prf_y=cat["prf_y"],
        prf_sigma=cat["prf_sigma"],
        ev_weights=cat["ev_weights"],
        colour_tuning=cat["colour_tuning"],
        shape_tuning=cat["shape_tuning"],
        direction_pref=cat["direction_pref"],
        baseline=rng.uniform(800.0, 1200.0, size=n),
    )


def _pool(frames: np.ndarray, max_side: int = 32) -> np.ndarray:
    """Block-average frames to at most max_side pixels a side: (F, h, w, 3) floats in [0, 1]."""
    f, h, w, _ = frames.shape
    k = max(1, math.ceil(max(h, w) / max_side))
    h2, w2 = h // k * k, w // k * k
    # Sum in integers first: much cheaper than converting every pixel to float.
    acc = (
        frames[:, :h2, :w2].reshape(f, h2 // k, k, w2 // k, k, 3).sum(axis=(2, 4), dtype=np.uint32)
    )
    return acc.astype(np.float32) / (255.0 * k * k)


def stimulus_features(frames: np.ndarray) -> np.ndarray:
    """Pixel features early visual cortex pools, shared by all subjects: (F, 4, h, w).

    Luminance, local contrast and two colour-opponent channels (EV_FEATURES), on frames
    block-averaged to at most 32 pixels a side.
    """
    img = _pool(frames)  # (F, h, w, 3)
    lum = img.mean(-1)
    contrast = np.abs(lum - gaussian_filter(lum, sigma=(0, 1.5, 1.5)))
    red_green = img[..., 0] - img[..., 1]
    blue_yellow = img[..., 2] - 0.5 * (img[..., 0] + img[..., 1])
    return np.stack([lum, contrast, red_green, blue_yellow], axis=1).astype(np.float32)


def neural_drive(brain: SubjectBrain, features: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """Stimulus drive of every cortical voxel at the render rate: (F, V) floats.

    Early visual voxels pool `stimulus_features` inside a Gaussian population receptive
    field; colour/shape, motion and category voxels are tuned to the object's attributes
    (from the frame table); every visual voxel also follows the object's size.
    """
    n_f, _, h, w = features.shape
    feats = features.reshape(n_f, 4, h * w)
    drive = np.zeros((n_f, brain.n_voxels))
    ev = np.nonzero(brain.region == 0)[0]
    if ev.size:
        ys = (np.arange(h) + 0.5) / h * 2 - 1
        xs = (np.arange(w) + 0.5) / w * 2 - 1
        gy, gx = np.meshgrid(-ys, xs, indexing="ij")  # visual field: up is +y
        d2 = (gx.ravel()[None] - brain.prf_x[ev, None]) ** 2 + (
            gy.ravel()[None] - brain.prf_y[ev, None]
        ) ** 2
        prf = np.exp(-d2 / (2 * brain.prf_sigma[ev, None] ** 2))
        prf /= prf.sum(axis=1, keepdims=True)  # (n_ev, h*w)
        pooled = (feats.reshape(n_f * 4, h * w) @ prf.T.astype(np.float32)).reshape(n_f, 4, -1)
        pooled = pooled - pooled.mean(axis=0, keepdims=True)  # (F, 4, n_ev)
        drive[:, ev] = np.einsum("fkv,vk->fv", pooled, brain.ev_weights[ev])
        drive[:, ev] /= drive[:, ev].std(axis=0, keepdims=True) + 1e-9

    shape = table["shape"].map({s: i for i, s in enumerate(SHAPES)}).to_numpy()
    colour = table["colour"].map({c: i for i, c in enumerate(COLOURS)}).to_numpy()
    direction = table["direction"].map({d: i for i, d in enumerate(DIRECTIONS)}).to_numpy()
    size = table["size"].to_numpy() / 0.26
    speed = table["speed"].to_numpy() / 0.09
    angle = np.radians(45.0 * direction)

    cs = np.nonzero(brain.region == 1)[0]
    drive[:, cs] = size[:, None] * (
        brain.colour_tuning[cs][:, colour].T + brain.shape_tuning[cs][:, shape].T
    )
    mo = np.nonzero(brain.region == 2)[0]
    drive[:, mo] = np.sqrt(speed)[:, None] * np.exp(
        2.0 * (np.cos(angle[:, None] - brain.direction_pref[mo][None]) - 1.0)
    )
    ca = np.nonzero(brain.region == 3)[0]
    drive[:, ca] = size[:, None] * brain.shape_tuning[ca][:, shape].T

    vis = np.concatenate([cs, mo, ca])
    if vis.size:
        d = drive[:, vis]
        drive[:, vis] = (d - d.mean(0)) / (d.std(0) + 1e-9)
    all_vis = np.nonzero(brain.region < 4)[0]
    drive[:, all_vis] = (1 - GENERIC_SHARE) * drive[:, all_vis] + GENERIC_SHARE * (
        size[:, None] - 1.0
    ) / 0.3
    return drive


def bold_response(brain: SubjectBrain, drive: np.ndarray, fps: int, tr: float) -> np.ndarray:
    """Convolve the drive with each voxel's HRF and average within TRs: (T, V)."""
    n_f, n_v = drive.shape
    per_tr = int(round(tr * fps))
    hrf = double_gamma(np.arange(0, 32.0, 1.0 / fps), brain.hrf_peak_s)  # (L, V)
    n = n_f + hrf.shape[0] - 1
    nfft = scipy.fft.next_fast_len(n, real=True)
    spectrum = scipy.fft.rfft(drive.astype(np.float32), nfft, axis=0, workers=-1)
    spectrum *= scipy.fft.rfft(hrf.astype(np.float32), nfft, axis=0, workers=-1)
    bold = scipy.fft.irfft(spectrum, nfft, axis=0, workers=-1)[:n_f].astype(np.float64)
    n_tr = n_f // per_tr
    return bold[: n_tr * per_tr].reshape(n_tr, per_tr, n_v).mean(axis=1)


def noise(rng: np.random.Generator, n_tr: int, brain: SubjectBrain, cfg: BrainConfig) -> np.ndarray:
    """Unit-variance scanner noise: spatially smooth + white, AR(1) in time: (T, V)."""
    side = cfg.sheet_side
    order = hilbert_order(side)
    per_hemi = []
    for _ in range(2):
        white = rng.standard_normal((n_tr, side, side))
        if cfg.noise_smoothness > 0:
            sm = gaussian_filter(white, sigma=(0, cfg.noise_smoothness, cfg.noise_smoothness))
            sm /= sm.std() + 1e-12
        else:
            sm = white
        mixed = np.sqrt(cfg.smooth_noise_fraction) * sm + np.sqrt(
            1 - cfg.smooth_noise_fraction
        ) * rng.standard_normal((n_tr, side, side))
        per_hemi.append(mixed.reshape(n_tr, side * side)[:, order])
    e = np.concatenate(per_hemi, axis=1)
    out = np.empty_like(e)
    out[0] = e[0]
    scale = math.sqrt(1 - cfg.ar1**2)
    for t in range(1, n_tr):
        out[t] = cfg.ar1 * out[t - 1] + scale * e[t]
    return out


def drift(rng: np.random.Generator, n_tr: int, n_voxels: int, std: float) -> np.ndarray:
    """Slow scanner drift: a few random low-frequency cosines per voxel: (T, V)."""
    t = np.arange(n_tr)[:, None] / max(n_tr - 1, 1)
    out = np.zeros((n_tr, n_voxels))
    for k in range(1, 4):
        amp = rng.standard_normal(n_voxels) / k
        phase = rng.uniform(0, 2 * math.pi, n_voxels)
        out += amp * np.cos(math.pi * k * t + phase)
    out /= out.std(axis=0, keepdims=True) + 1e-12
    return std * out


def true_lag_tr(brain: SubjectBrain, tr: float) -> int:
    """The most common TR lag at which stimulus-driven voxels respond (from true HRFs)."""
    lags = tr_lag(brain.hrf_peak_s[brain.driven], tr)
    return int(np.bincount(lags).argmax())
