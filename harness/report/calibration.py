"""Calibration of the paired statistics on simulated tables with a known true difference.

A simulated table has the design of a SynthCC test set: subjects who watch the same test
segments, clips grouped in scenes of 1-4 clips, per-clip noise correlated along a segment, and
seeds that retrain the models. The per-clip difference between a variant and the reference is

    d[s, k, c] = delta + u[k] + v[s, k] + a[b(c)] + g[s, b(c)] + e[s, k, c]

with u a seed's offset (shared by the subjects: one MBM per seed), v a run's own offset, a the
scene's effect (shared by every subject and seed: the same stimulus), g a subject's scene effect
and e AR(1) noise along each segment. `delta` is the true difference. The default sizes come
from the committed `paper_ablations` tables (video 2-way of no-mbm against full: clip sd 0.25,
scene effects about 0.04, seed offsets about 0.01).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.report.stats import BLOCKS_KEY, NAMES_KEY, paired_tests


@dataclass(frozen=True)
class Design:
    subjects: int = 3
    seeds: int = 3
    segments: int = 4
    clips: int = 57  # per segment (SynthCC tiny: 60 TRs less the window's edge)
    scene_clips: tuple[int, int] = (1, 4)  # a scene's clips, drawn uniformly
    sd_clip: float = 0.25
    ar: float = 0.3  # lag-1 correlation of the clip noise along a segment
    sd_scene: float = 0.04
    sd_subject_scene: float = 0.03
    sd_seed: float = 0.01
    sd_run: float = 0.01


def _ar1(white: np.ndarray, ar: float) -> np.ndarray:
    """AR(1) noise of unit variance along each row of `white` (segments, clips), flattened."""
    from scipy.signal import lfilter

    white = white.copy()
    white[:, 1:] *= np.sqrt(1 - ar**2)  # the first clip of a segment starts stationary
    return lfilter([1.0], [1.0, -ar], white, axis=1).ravel()


def simulate(design: Design, delta: float, rng: np.random.Generator):
    """One table's per-sample scores {(variant, subject, seed): {metric, names, blocks}}: the
    reference scores 0 and the variant the simulated differences."""
    names, blocks = [], []
    for segment in range(design.segments):
        scene, left = 0, 0
        for c in range(design.clips):
            if left == 0:
                scene += 1
                left = int(rng.integers(design.scene_clips[0], design.scene_clips[1] + 1))
            left -= 1
            names.append(f"test{segment + 1}_{c:03d}")
            blocks.append(f"test{segment + 1}/{scene}")
    labels, block_of = np.unique(blocks, return_inverse=True)
    n = len(names)
    scene = rng.normal(0, design.sd_scene, len(labels))
    seed_offset = rng.normal(0, design.sd_seed, design.seeds)
    per = {}
    for s in range(design.subjects):
        subject_scene = rng.normal(0, design.sd_subject_scene, len(labels))
        for k in range(design.seeds):
            noise = _ar1(rng.normal(0, 1, (design.segments, design.clips)), design.ar)
            d = (
                delta
                + seed_offset[k]
                + rng.normal(0, design.sd_run)
                + scene[block_of]
                + subject_scene[block_of]
                + design.sd_clip * noise
            )
            meta = {NAMES_KEY: np.array(names), BLOCKS_KEY: np.array(blocks)}
            per[("ref", f"subject{s + 1}", k)] = {"score": np.zeros(n), **meta}
            per[("variant", f"subject{s + 1}", k)] = {"score": d, **meta}
    return per


@dataclass(frozen=True)
class Calibration:
    method: str
    tables: int
    coverage: float  # of the true difference by the average's CI, when it is not 0
    false_positives: float  # rate of p < level when the true difference is 0
    power: float  # rate of p < level (and the right sign) at the true difference

    def mc_error(self, rate: float) -> float:
        return float(np.sqrt(rate * (1 - rate) / self.tables))


def calibrate(
    method: str,
    tables: int = 400,
    delta: float = 0.02,
    design: Design = Design(),
    level: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    tester: Callable | None = None,
) -> Calibration:
    """Coverage, false-positive rate and power of `method` over `tables` simulated tables with
    no difference and as many with `delta`; `tester(per, reference)` may replace paired_tests
    (a method that is not one of stats.METHODS) and returns (ci_low, ci_high, p)."""
    rng = np.random.default_rng(seed)

    def one(per) -> tuple[float, float, float]:
        if tester is not None:
            return tester(per, "ref")
        t = paired_tests(
            per,
            "ref",
            ["score"],
            n_boot=n_boot,
            seed=int(rng.integers(2**31)),
            method=method,
            per_subject=False,
        )
        row = t[t["subject"] == "average"].iloc[0]
        return row["ci_low"], row["ci_high"], row["p_value"]

    false_positive = covered = detected = 0
    for _ in range(tables):
        _, _, p = one(simulate(design, 0.0, rng))
        false_positive += p < level
        low, high, p = one(simulate(design, delta, rng))
        covered += low <= delta <= high
        detected += (p < level) and not low <= 0  # the right sign (NaN: a test with no CI)
    return Calibration(method, tables, covered / tables, false_positive / tables, detected / tables)


def block_sign_flip(per, reference: str, n_perm: int = 2000, seed: int = 0):
    """A sign-flip permutation test at the scene level (scenes flipped jointly for every
    subject and seed), for comparison only: it has no CI, and it treats the seeds' shared
    offset as part of the difference."""
    variant = next(v for (v, _, _) in per if v != reference)
    blocks: dict[str, list[float]] = {}
    for (v, subject, k), scores in per.items():
        if v != variant:
            continue
        d = scores["score"] - per[(reference, subject, k)]["score"]
        for b, x in zip(scores[BLOCKS_KEY], d, strict=True):
            blocks.setdefault(str(b), []).append(float(x))
    sums = np.array([sum(x) for x in blocks.values()])
    total = sum(len(x) for x in blocks.values())
    observed = abs(sums.sum()) / total
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_perm, len(sums)))
    null = np.abs(signs @ sums) / total
    p = (1 + np.sum(null >= observed - 1e-15)) / (n_perm + 1)
    return np.nan, np.nan, float(p)


def two_way_bootstrap(per, reference: str, n_boot: int = 1000, seed: int = 0):
    """The percentile bootstrap that resamples seeds and scenes together (each jointly for all
    subjects), for comparison only: with three seeds its seed draws cannot show the seeds'
    spread as a t with 2 degrees of freedom would, so it is liberal when seed effects are large."""
    from harness.report.stats import seed_differences

    variant = next(v for (v, _, _) in per if v != reference)
    subjects = sorted({s for (v, s, _) in per if v == variant})
    d = np.stack([seed_differences(per, variant, reference, s, "score")[0] for s in subjects])
    scores = per[(variant, subjects[0], 0)]
    labels, block_of = np.unique(scores[BLOCKS_KEY], return_inverse=True)
    S, K, _ = d.shape
    B = len(labels)
    sums = np.stack([d[:, :, block_of == b].sum(axis=-1) for b in range(B)], axis=-1)
    counts = np.bincount(block_of, minlength=B).astype(float)
    rng = np.random.default_rng(seed)
    w = rng.multinomial(B, np.full(B, 1.0 / B), size=n_boot).astype(float)
    v = rng.multinomial(K, np.full(K, 1.0 / K), size=n_boot).astype(float)
    means = np.einsum("nb,skb->nsk", w, sums) / (w @ counts)[:, None, None]
    stats = np.einsum("nk,nsk->n", v, means) / (K * S)
    low, high = np.percentile(stats, [2.5, 97.5])
    p = min(1.0, 2 * min((stats <= 0).mean(), (stats >= 0).mean()))
    return float(low), float(high), float(p)
