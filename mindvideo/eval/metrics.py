"""Pure, batched video reconstruction metrics: SSIM, PSNR, N-way top-K, CLIP-pcc, hue, EPE."""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
from scipy import ndimage, stats

# SSIM as in skimage.metrics.structural_similarity with its defaults.
SSIM_WIN_SIZE = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 255.0

# Farneback dense optical flow parameters of the EPE metric (fixed so runs are comparable).
FLOW_PYR_SCALE = 0.5
FLOW_LEVELS = 3
FLOW_WINSIZE = 15
FLOW_ITERATIONS = 3
FLOW_POLY_N = 5
FLOW_POLY_SIGMA = 1.2
FLOW_FLAGS = 0

# OpenCV's 8-bit hue: degrees / 2, integers 0..179.
HUE_BINS = 180

# Frames filtered per SSIM chunk: keeps the float64 temporaries near cache size.
_SSIM_CHUNK_PIXELS = 250_000


def _to_numpy(x) -> np.ndarray:
    """A numpy view of an array or a torch tensor (any device), without importing torch."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_frames(pred: np.ndarray, target: np.ndarray, what: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{what}: pred and target shapes differ ({pred.shape} vs {target.shape}); "
            "pass frames of the same (..., H, W, 3) shape."
        )
    if pred.ndim < 3 or pred.shape[-1] != 3:
        raise ValueError(
            f"{what}: expected RGB frames shaped (..., H, W, 3), got {pred.shape}; "
            "move the channel axis last."
        )


def ssim(pred, target) -> np.ndarray:
    """Per-frame SSIM of RGB frames on the 0..255 scale, batched over leading axes.

    pred, target: (..., H, W, 3) uint8 or float arrays or torch tensors, H and W >= 7.
    Returns float64 of shape (...). Equals
    `skimage.metrics.structural_similarity(p, t, channel_axis=-1, data_range=255)` per frame:
    a 7x7 uniform window (scipy.ndimage.uniform_filter, filtered along H then W as skimage
    does), K1=0.01, K2=0.03, sample covariance (N/(N-1), N=49), one SSIM map per channel,
    the map cropped by 3 pixels at every border and averaged over pixels and channels.
    Always computed in float64 (skimage computes float32 inputs in float32, so for those the
    two differ at about 1e-5). Symmetric in pred and target.
    """
    pred, target = _to_numpy(pred), _to_numpy(target)
    _check_frames(pred, target, "ssim")
    *lead, h, w, _ = pred.shape
    if h < SSIM_WIN_SIZE or w < SSIM_WIN_SIZE:
        raise ValueError(f"ssim: frames are {h}x{w}; the 7x7 window needs at least 7x7 pixels.")
    x_all = pred.reshape(-1, h, w, 3)  # (frames, H, W, 3)
    y_all = target.reshape(-1, h, w, 3)
    n_frames = x_all.shape[0]
    out = np.empty(n_frames, dtype=np.float64)

    n_window = SSIM_WIN_SIZE**2
    cov_norm = n_window / (n_window - 1)
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    pad = (SSIM_WIN_SIZE - 1) // 2
    # Size 1 on the frame and channel axes: scipy skips those axes, so each channel of each
    # frame is filtered exactly as skimage filters a single-channel image.
    size = (1, SSIM_WIN_SIZE, SSIM_WIN_SIZE, 1)
    chunk = max(1, _SSIM_CHUNK_PIXELS // (h * w * 3))
    for start in range(0, n_frames, chunk):
        x = x_all[start : start + chunk].astype(np.float64)
        y = y_all[start : start + chunk].astype(np.float64)
        # Only the cropped region is kept, so the filter's border mode never matters.
        crop = (slice(None), slice(pad, h - pad), slice(pad, w - pad), slice(None))
        ux = ndimage.uniform_filter(x, size=size)[crop]  # (chunk, H-6, W-6, 3)
        uy = ndimage.uniform_filter(y, size=size)[crop]
        uxx = ndimage.uniform_filter(x * x, size=size)[crop]
        uyy = ndimage.uniform_filter(y * y, size=size)[crop]
        uxy = ndimage.uniform_filter(x * y, size=size)[crop]
        vx = cov_norm * (uxx - ux * ux)
        vy = cov_norm * (uyy - uy * uy)
        vxy = cov_norm * (uxy - ux * uy)
        s_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        # Mean per channel, then over channels, as skimage averages its per-channel SSIMs.
        out[start : start + chunk] = s_map.mean(axis=(1, 2)).mean(axis=-1)
    return out.reshape(lead)


def psnr(pred, target, max_db: float | None = None) -> np.ndarray:
    """Per-frame PSNR in dB of frames on the 0..255 scale: 10 * log10(255^2 / MSE).

    pred, target: (..., H, W, 3) uint8 or float arrays or torch tensors. Returns float64 of
    shape (...), equal to `skimage.metrics.peak_signal_noise_ratio(t, p, data_range=255)`.
    Identical frames (MSE 0) give +inf; pass `max_db` to cap every value at that many dB
    (needed before averaging when some reconstructions can be exact).
    """
    pred, target = _to_numpy(pred), _to_numpy(target)
    _check_frames(pred, target, "psnr")
    diff = target.astype(np.float64) - pred.astype(np.float64)
    mse = np.mean(diff * diff, axis=(-3, -2, -1))  # (...)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(DATA_RANGE**2 / mse)
    if max_db is not None:
        db = np.minimum(db, float(max_db))
    return db


def _gt_class_mask(gt_scores: np.ndarray, gt_top: int) -> np.ndarray:
    """(n, C) bool: each row's `gt_top` highest-scoring classes, ties to the lower index.

    Same selection as `np.argsort(-row, kind="stable")[:gt_top]`, without a full sort.
    """
    kth = -np.partition(-gt_scores, gt_top - 1, axis=1)[:, gt_top - 1 : gt_top]  # (n, 1)
    above = gt_scores > kth
    tied = gt_scores == kth
    room = gt_top - above.sum(axis=1, keepdims=True)  # tied classes still to take, >= 1
    return above | (tied & (np.cumsum(tied, axis=1) <= room))


def _check_n_way(
    pred_probs: np.ndarray, gt_probs: np.ndarray, n_way: int, top_k: int, trials: int, gt_top: int
) -> None:
    if pred_probs.ndim != 2 or pred_probs.shape != gt_probs.shape:
        raise ValueError(
            f"n-way: pred_probs {pred_probs.shape} and gt_probs {gt_probs.shape} must both be "
            "(samples, classes) of the same shape."
        )
    n_classes = pred_probs.shape[1]
    if not 1 <= gt_top < n_classes:
        raise ValueError(f"n-way: gt_top={gt_top} must be in 1..{n_classes - 1} (classes - 1).")
    if n_way < 2:
        raise ValueError(f"n-way: n_way={n_way} must be at least 2.")
    if n_way - 1 > n_classes - gt_top:
        raise ValueError(
            f"n-way: n_way={n_way} needs {n_way - 1} distractors but only "
            f"{n_classes - gt_top} classes are not ground truth ({n_classes} classes, "
            f"gt_top={gt_top}); lower n_way."
        )
    if not 1 <= top_k <= n_way:
        raise ValueError(f"n-way: top_k={top_k} must be in 1..n_way ({n_way}).")
    if trials < 1:
        raise ValueError(f"n-way: trials={trials} must be at least 1.")
    if not (np.isfinite(pred_probs).all() and np.isfinite(gt_probs).all()):
        raise ValueError("n-way: pred_probs or gt_probs hold NaN or inf; check the classifier.")


def _beating_counts(pred_probs: np.ndarray, gt_probs: np.ndarray, gt_top: int) -> np.ndarray:
    """(n,) int: m, the number of non-GT classes whose p_pred beats the best GT class."""
    gt_mask = _gt_class_mask(gt_probs, gt_top)  # (n, C)
    best_gt = np.where(gt_mask, pred_probs, -np.inf).max(axis=1, keepdims=True)  # (n, 1)
    # A GT class never exceeds best_gt, so this counts only non-GT classes; ties do not beat.
    return (pred_probs > best_gt).sum(axis=1)


def n_way_top_k(
    pred_probs,
    gt_probs,
    n_way: int,
    top_k: int = 1,
    trials: int = 100,
    gt_top: int = 3,
    seed: int | np.random.Generator = 0,
    method: str = "hypergeometric",
) -> np.ndarray:
    """Per-sample N-way top-K classification accuracy (the MinD-Video protocol), seeded.

    pred_probs: (n, C) classifier probabilities on the reconstruction; gt_probs: (n, C)
    classifier probabilities (or logits: only their ranking is used) on the ground truth.
    Returns (n,) float64: successes / trials per sample.

    Protocol: the ground truth's `gt_top` highest classes (ties to the lower class index) are
    correct. Each trial draws n_way - 1 distractors without replacement from the other
    C - gt_top classes; it succeeds if some correct class g has p_pred(g) among the top K of
    {p_pred(g)} U {p_pred(distractors)}. `gt_top=3` is the published protocol; `gt_top=1` is
    the strict variant (only the GT argmax is correct). Ties: a distractor with
    p_pred equal to p_pred(g) does not beat g (the ground truth wins ties).

    method "hypergeometric" (vectorised, exact): with p* the best p_pred over the correct
    classes and m the number of other classes with p_pred > p*, a trial succeeds iff fewer
    than K of its distractors are among those m, and that count is Hypergeometric(m,
    C - gt_top - m, n_way - 1). The trials are drawn from that law, so the scores have the
    same distribution as method "loop" (the reference: distractors drawn and ranked
    literally, one trial at a time, slow), though not the same values for a given seed.
    """
    pred_probs, gt_probs = _to_numpy(pred_probs), _to_numpy(gt_probs)
    _check_n_way(pred_probs, gt_probs, n_way, top_k, trials, gt_top)
    rng = np.random.default_rng(seed)
    if method == "loop":
        return _n_way_loop(pred_probs, gt_probs, n_way, top_k, trials, gt_top, rng)
    if method != "hypergeometric":
        raise ValueError(f"n_way_top_k: method {method!r}; use 'hypergeometric' or 'loop'")
    n_other = pred_probs.shape[1] - gt_top
    m = _beating_counts(pred_probs, gt_probs, gt_top)[:, None]  # (n, 1)
    drawn_beating = rng.hypergeometric(m, n_other - m, n_way - 1, size=(len(m), trials))
    return (drawn_beating < top_k).mean(axis=1)


def n_way_expected(pred_probs, gt_probs, n_way: int, top_k: int = 1, gt_top: int = 3) -> np.ndarray:
    """(n,) exact expected `n_way_top_k` score per sample (the infinite-trials limit).

    P(success) = P(X <= K - 1) with X ~ Hypergeometric(m, C - gt_top - m, n_way - 1); same
    inputs, tie convention and validation as `n_way_top_k`, no random draws.
    """
    pred_probs, gt_probs = _to_numpy(pred_probs), _to_numpy(gt_probs)
    _check_n_way(pred_probs, gt_probs, n_way, top_k, 1, gt_top)
    m = _beating_counts(pred_probs, gt_probs, gt_top)
    n_other = pred_probs.shape[1] - gt_top
    return stats.hypergeom.cdf(top_k - 1, n_other, m, n_way - 1).astype(np.float64)


def n_way_chance(n_way: int, top_k: int = 1, gt_top: int = 3) -> float:
    """The expected `n_way_top_k` score of a reconstruction unrelated to the ground truth
    (its class probabilities in a random order): 1 - C(N-1, K) / C(N-1+gt_top, K), i.e.
    3 / (N + 2) for top-1 under the published rule and K / N for the strict variant."""
    if n_way < 2 or not 1 <= top_k < n_way or gt_top < 1:
        raise ValueError(f"n_way {n_way}, top_k {top_k}, gt_top {gt_top}: no N-way protocol")
    return 1.0 - math.comb(n_way - 1, top_k) / math.comb(n_way - 1 + gt_top, top_k)


def _n_way_loop(pred_probs, gt_probs, n_way, top_k, trials, gt_top, rng) -> np.ndarray:
    """`n_way_top_k` with method "loop": distractors drawn and ranked literally."""
    n_samples, n_classes = pred_probs.shape
    scores = np.empty(n_samples, dtype=np.float64)
    for i in range(n_samples):
        correct = np.argsort(-gt_probs[i], kind="stable")[:gt_top]
        others = np.setdiff1d(np.arange(n_classes), correct)
        successes = 0
        for _ in range(trials):
            distractors = rng.choice(others, n_way - 1, replace=False)
            for g in correct:
                # The correct class first and a stable sort: it wins ties with distractors.
                candidates = np.concatenate([[pred_probs[i, g]], pred_probs[i, distractors]])
                if 0 in np.argsort(-candidates, kind="stable")[:top_k]:
                    successes += 1
                    break
        scores[i] = successes / trials
    return scores


def n_way_top_k_frames(pred_probs, gt_probs, n_way: int, **options) -> np.ndarray:
    """Frame-level N-way top-K: (n, F, C) probabilities per frame position -> (n, F) scores.

    Each (sample, frame position) is scored as one `n_way_top_k` row, all from one generator;
    `options` are `n_way_top_k`'s (top_k, trials, gt_top, seed, method).
    """
    pred_probs, gt_probs = _to_numpy(pred_probs), _to_numpy(gt_probs)
    if pred_probs.ndim != 3 or pred_probs.shape != gt_probs.shape:
        raise ValueError(
            f"n-way frames: pred_probs {pred_probs.shape} and gt_probs {gt_probs.shape} must "
            "both be (samples, frames, classes) of the same shape."
        )
    n, n_frames, n_classes = pred_probs.shape
    scores = n_way_top_k(
        pred_probs.reshape(n * n_frames, n_classes),
        gt_probs.reshape(n * n_frames, n_classes),
        n_way,
        **options,
    )
    return scores.reshape(n, n_frames)


def frame_position_summary(scores) -> dict[str, np.ndarray | float]:
    """Per-position breakdown of (n, F) per-sample-per-position scores.

    Returns {"per_position": (F,) mean over samples, "per_sample": (n,) mean over positions,
    "mean": overall mean}; "per_sample" is what `summarise` takes for frame-level metrics.
    """
    scores = _to_numpy(scores).astype(np.float64)
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"frame_position_summary: expected non-empty (n, F), got {scores.shape}.")
    return {
        "per_position": scores.mean(axis=0),
        "per_sample": scores.mean(axis=1),
        "mean": float(scores.mean()),
    }


def summarise(
    name: str,
    per_sample_scores,
    kind: Literal["proportion", "mean"] = "proportion",
    seed: int | np.random.Generator = 0,
    n_boot: int = 1000,
) -> dict[str, float]:
    """Mean, standard error and seeded 95% bootstrap CI of (n,) per-sample scores.

    Returns {name, name_se, name_ci_low, name_ci_high}. `kind="proportion"`: binomial SE over
    samples, sqrt(p (1 - p) / n) with p the mean (each sample counts as one success
    probability; the MinD-Video papers instead divide by the number of trials). `kind="mean"`:
    std (ddof=1) / sqrt(n). The CI is the 2.5 / 97.5 percentile of `n_boot` means of samples
    resampled with replacement. Non-finite scores raise (cap PSNR with `psnr(max_db=...)`).
    """
    x = _to_numpy(per_sample_scores).astype(np.float64).ravel()  # (n,)
    if x.size == 0:
        raise ValueError(f"summarise({name!r}): no scores.")
    if not np.isfinite(x).all():
        raise ValueError(
            f"summarise({name!r}): scores hold NaN or inf (PSNR of identical frames is inf; "
            "pass max_db to psnr)."
        )
    if kind not in ("proportion", "mean"):
        raise ValueError(f"summarise({name!r}): kind={kind!r} must be 'proportion' or 'mean'.")
    if n_boot < 1:
        raise ValueError(f"summarise({name!r}): n_boot={n_boot} must be at least 1.")
    n = x.size
    mean = float(x.mean())
    if kind == "proportion":
        if not ((x >= 0).all() and (x <= 1).all()):
            raise ValueError(
                f"summarise({name!r}): proportions must lie in [0, 1]; use kind='mean'."
            )
        se = float(np.sqrt(mean * (1.0 - mean) / n))
    else:
        se = float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    rng = np.random.default_rng(seed)
    boot_means = np.empty(n_boot, dtype=np.float64)
    step = max(1, 4_000_000 // n)  # resamples per batch, bounding the index matrix
    for start in range(0, n_boot, step):
        stop = min(start + step, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))  # (batch, n)
        boot_means[start:stop] = x[idx].mean(axis=1)
    low, high = np.percentile(boot_means, [2.5, 97.5])
    return {
        name: mean,
        f"{name}_se": se,
        f"{name}_ci_low": float(low),
        f"{name}_ci_high": float(high),
    }


def clip_pcc(embeddings, variant: Literal["adjacent", "allpairs"] = "adjacent") -> np.ndarray:
    """Temporal consistency of each clip from its frames' embeddings: mean cosine similarity.

    embeddings: (n, F, D), F >= 2. `adjacent`: mean over f of cos(e_f, e_{f+1}) (the
    MinD-Video variant); `allpairs`: mean over all pairs f < g of cos(e_f, e_g). Returns (n,).
    """
    e = _to_numpy(embeddings).astype(np.float64)
    if e.ndim != 3 or e.shape[1] < 2:
        raise ValueError(f"clip_pcc: expected (n, F>=2, D) embeddings, got {e.shape}.")
    norms = np.linalg.norm(e, axis=-1, keepdims=True)  # (n, F, 1)
    if (norms == 0).any():
        raise ValueError("clip_pcc: some frame embeddings are all zero; cosine is undefined.")
    e = e / norms
    if variant == "adjacent":
        return np.sum(e[:, :-1] * e[:, 1:], axis=-1).mean(axis=1)
    if variant == "allpairs":
        gram = e @ e.transpose(0, 2, 1)  # (n, F, F)
        f_idx, g_idx = np.triu_indices(e.shape[1], k=1)
        return gram[:, f_idx, g_idx].mean(axis=1)
    raise ValueError(f"clip_pcc: variant={variant!r} must be 'adjacent' or 'allpairs'.")


def _as_uint8_clips(clips, what: str) -> np.ndarray:
    """(n, F, H, W, 3) uint8; float inputs on 0..255 are rounded and clipped."""
    x = _to_numpy(clips)
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"{what}: expected clips shaped (n, F, H, W, 3), got {x.shape}.")
    if x.dtype != np.uint8:
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x)


def hue_histograms(clips) -> np.ndarray:
    """(n, F, H, W, 3) RGB clips on 0..255 -> (n, F, 180) hue histograms, each summing to 1.

    Hue from cv2.cvtColor(COLOR_RGB2HSV) on uint8: degrees / 2, integers 0..179, one bin each.
    OpenCV gives achromatic (grey, black, white) pixels hue 0, so they fall in bin 0.
    """
    x = _as_uint8_clips(clips, "hue_histograms")
    n, n_frames, h, w, _ = x.shape
    # cvtColor is per pixel: convert all frames as one tall image.
    hue = cv2.cvtColor(x.reshape(-1, w, 3), cv2.COLOR_RGB2HSV)[..., 0]  # (n*F*H, W)
    hue = hue.reshape(n * n_frames, h * w).astype(np.int64)
    offsets = np.arange(n * n_frames)[:, None] * HUE_BINS
    counts = np.bincount((hue + offsets).ravel(), minlength=n * n_frames * HUE_BINS)
    return (counts.reshape(n, n_frames, HUE_BINS) / (h * w)).astype(np.float64)


def hue_sim(pred_clips, gt_clips) -> np.ndarray:
    """Hue similarity (mind-animator protocol): (n, F, H, W, 3) clips -> (n,).

    Per frame: the Pearson correlation between the 180-bin hue histograms of the prediction
    and the ground truth (`hue_histograms`); then the mean over frames. 1.0 for identical hue
    distributions; NaN for a frame where a histogram is flat across all 180 bins.
    """
    p, g = _to_numpy(pred_clips), _to_numpy(gt_clips)
    if p.shape != g.shape:
        raise ValueError(f"hue_sim: pred {p.shape} and gt {g.shape} shapes differ.")
    hp = hue_histograms(p)  # (n, F, 180)
    hg = hue_histograms(g)
    hp = hp - hp.mean(axis=-1, keepdims=True)
    hg = hg - hg.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (hp * hg).sum(-1) / np.sqrt((hp * hp).sum(-1) * (hg * hg).sum(-1))  # (n, F)
    return r.mean(axis=1)


def _farneback(prev_grey: np.ndarray, next_grey: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 flow from one grey frame to the next, fixed parameters."""
    return cv2.calcOpticalFlowFarneback(
        prev_grey,
        next_grey,
        None,
        FLOW_PYR_SCALE,
        FLOW_LEVELS,
        FLOW_WINSIZE,
        FLOW_ITERATIONS,
        FLOW_POLY_N,
        FLOW_POLY_SIGMA,
        FLOW_FLAGS,
    )


def epe(pred_clips, gt_clips) -> np.ndarray:
    """End-point error of motion (mind-animator protocol): (n, F, H, W, 3) clips -> (n,) pixels.

    For each consecutive frame pair, Farneback flow (cv2, on COLOR_RGB2GRAY frames, the
    FLOW_* parameters) of the prediction and of the ground truth; EPE is the Euclidean norm
    of their difference, averaged over pixels and the F - 1 pairs. Needs F >= 2.
    """
    p_grey = _grey_clips(pred_clips, "epe")
    g_grey = _grey_clips(gt_clips, "epe")
    if p_grey.shape != g_grey.shape:
        raise ValueError(f"epe: pred {p_grey.shape} and gt {g_grey.shape} shapes differ.")
    n, n_frames = p_grey.shape[:2]
    if n_frames < 2:
        raise ValueError(f"epe: clips have {n_frames} frame; optical flow needs at least 2.")
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        errors = []
        for f in range(n_frames - 1):
            flow_p = _farneback(p_grey[i, f], p_grey[i, f + 1])  # (H, W, 2)
            flow_g = _farneback(g_grey[i, f], g_grey[i, f + 1])
            errors.append(np.linalg.norm(flow_p - flow_g, axis=-1).mean(dtype=np.float64))
        out[i] = np.mean(errors)
    return out


def _grey_clips(clips, what: str) -> np.ndarray:
    c = _as_uint8_clips(clips, what)
    n, n_frames, h, w, _ = c.shape
    return cv2.cvtColor(c.reshape(-1, w, 3), cv2.COLOR_RGB2GRAY).reshape(n, n_frames, h, w)


def clip_motion(clips) -> tuple[np.ndarray, np.ndarray]:
    """Each clip's motion from Farneback flow between consecutive frames (the FLOW_*
    parameters): (n, F, H, W, 3) -> the mean flow vector (n, 2) in pixels per frame, and the mean
    flow magnitude (n,). Needs F >= 2."""
    grey = _grey_clips(clips, "motion")
    n, n_frames = grey.shape[:2]
    if n_frames < 2:
        raise ValueError(f"motion: clips have {n_frames} frame; optical flow needs at least 2.")
    vectors = np.empty((n, 2), dtype=np.float64)
    speeds = np.empty(n, dtype=np.float64)
    for i in range(n):
        flow = np.stack([_farneback(grey[i, f], grey[i, f + 1]) for f in range(n_frames - 1)])
        vectors[i] = flow.reshape(-1, 2).mean(axis=0, dtype=np.float64)
        speeds[i] = np.linalg.norm(flow, axis=-1).mean(dtype=np.float64)
    return vectors, speeds


def motion(pred_clips, gt_clips, still: float = 1e-3) -> dict[str, np.ndarray]:
    """Does the reconstruction move the way the stimulus moves? Per clip:

    - `motion_direction`: cosine between the mean flow vector of the prediction and that of the
      ground truth (1: same direction, 0: unrelated, -1: opposite; 0 where either mean flow is
      shorter than `still` pixels per frame, i.e. has no direction);
    - `motion_speed`: the prediction's mean flow magnitude, pixels per frame;
    - `motion_speed_truth`: the ground truth's, the reference for `motion_speed`.
    """
    if np.shape(pred_clips) != np.shape(gt_clips):
        raise ValueError(
            f"motion: pred {np.shape(pred_clips)} and gt {np.shape(gt_clips)} shapes differ."
        )
    pv, ps = clip_motion(pred_clips)
    gv, gs = clip_motion(gt_clips)
    pn, gn = np.linalg.norm(pv, axis=1), np.linalg.norm(gv, axis=1)
    moving = (pn > still) & (gn > still)
    cos = np.zeros(len(pv))
    cos[moving] = (pv * gv).sum(axis=1)[moving] / (pn * gn)[moving]
    return {"motion_direction": cos, "motion_speed": ps, "motion_speed_truth": gs}


def retrieval_top1(similarity, n_way: int, groups=None) -> np.ndarray:
    """Exact N-way top-1 retrieval: for each query i, the probability that its own candidate
    (similarity[i, i]) scores above n_way - 1 distractors drawn at random, without replacement,
    from the candidates of other groups (e.g. other scenes: clips of the same scene are near
    copies and would be unfair distractors). Ties count against the query. Returns (n,).

    Equals the mean over infinitely many random trials: with b_i distractors that beat or tie
    the target among m_i eligible ones, P = C(m_i - b_i, k) / C(m_i, k), k = n_way - 1.
    """
    s = _to_numpy(similarity).astype(np.float64)
    n = s.shape[0]
    if s.shape != (n, n):
        raise ValueError(f"retrieval_top1: similarity must be square, got {s.shape}")
    g = np.arange(n) if groups is None else np.asarray(groups)
    eligible = g[None, :] != g[:, None]  # (n, n): other groups only
    m = eligible.sum(axis=1)
    k = n_way - 1
    if k < 1:
        raise ValueError(f"retrieval_top1: n_way must be at least 2, got {n_way}")
    if m.min() < k:
        raise ValueError(
            f"retrieval_top1: a query has only {m.min()} candidates outside its group; "
            f"{n_way}-way needs {k}"
        )
    beaters = ((s >= np.diag(s)[:, None]) & eligible).sum(axis=1)
    free = m - beaters
    from scipy.special import gammaln

    log_p = gammaln(free + 1) - gammaln(free - k + 1) - gammaln(m + 1) + gammaln(m - k + 1)
    return np.where(free >= k, np.exp(np.where(free >= k, log_p, 0.0)), 0.0)
