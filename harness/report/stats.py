"""Paired significance of each variant against the reference, over test samples.

Every run's `evaluate` stage keeps its per-sample scores (`per_sample.npz`: metric -> (n,), and
the scored clips' names). A variant and the reference that decoded the same subject with the same
seed are paired sample by sample (by name; by position in older runs without names). Per subject,
the differences are first averaged over the seeds both have, then:

- `delta`: the mean difference (variant - reference);
- `ci_low`/`ci_high`: a paired bootstrap percentile CI of that mean, resampling test samples
  (in the average over subjects: within each subject, then the subjects' means are averaged);
- `p_value`: the two-sided Wilcoxon signed-rank test of the per-sample differences (all subjects'
  samples together in the average), as later fMRI-to-video papers report. No correction for
  multiple comparisons is applied: the table says so.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

NAMES_KEY = "__names__"  # the scored clips' names, stored beside the metrics in per_sample.npz
AVERAGE = "average"
COLUMNS = ("variant", "subject", "metric", "delta", "ci_low", "ci_high", "p_value", "n", "pairs")

# (variant, subject, seed) -> metric -> per-sample scores (and NAMES_KEY -> names, if known)
PerSample = Mapping[tuple[str, str, int], Mapping[str, np.ndarray]]


def _aligned(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], metric: str):
    """The two runs' scores of `metric` on their common samples, in b's order; None if they
    cannot be paired (a metric missing, or different sample counts and no names)."""
    if metric not in a or metric not in b:
        return None
    x, y = np.asarray(a[metric], float), np.asarray(b[metric], float)
    if NAMES_KEY in a and NAMES_KEY in b:
        index = {str(n): i for i, n in enumerate(a[NAMES_KEY])}
        common = [(index[str(n)], j) for j, n in enumerate(b[NAMES_KEY]) if str(n) in index]
        if not common:
            return None
        ia, ib = map(list, zip(*common, strict=True))
        return x[ia], y[ib], [str(b[NAMES_KEY][j]) for j in ib]
    if len(x) != len(y):
        return None
    return x, y, None


def subject_differences(
    per_sample: PerSample, variant: str, reference: str, subject: str, metric: str
) -> tuple[np.ndarray, int] | None:
    """Per-sample differences variant - reference on one subject, averaged over the seeds both
    have (and that pair on the same samples); with the number of seeds. None if none pair."""
    seeds = sorted(
        s
        for (v, sub, s) in per_sample
        if v == variant and sub == subject and (reference, subject, s) in per_sample
    )
    diffs, names = [], None
    for seed in seeds:
        pair = _aligned(
            per_sample[(variant, subject, seed)], per_sample[(reference, subject, seed)], metric
        )
        if pair is None:
            continue
        x, y, these = pair
        if diffs and (len(x) != len(diffs[0]) or (names is not None and these != names)):
            continue  # another seed scored other samples: pair only like with like
        names = these if names is None else names
        diffs.append(x - y)
    if not diffs:
        return None
    return np.mean(diffs, axis=0), len(diffs)


def _stream(seed: int, *names: str) -> int:
    """The bootstrap seed of one cell, from the report's seed and the cell's names: adding a
    variant, metric or subject to a suite moves no other cell's CI."""
    words = [zlib.crc32(name.encode()) for name in names]
    return int(np.random.SeedSequence([seed, *words]).generate_state(1)[0])


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of differences d (1.0 when every difference is 0)."""
    from scipy.stats import wilcoxon

    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def bootstrap_ci(
    groups: Sequence[np.ndarray], n_boot: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile CI of the mean over groups of each group's mean, resampling within groups."""
    rng = np.random.default_rng(seed)
    stats = np.zeros(n_boot)
    for d in groups:
        idx = rng.integers(0, len(d), size=(n_boot, len(d)))
        stats += d[idx].mean(axis=1)
    stats /= len(groups)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def paired_tests(
    per_sample: PerSample,
    reference: str,
    metrics: Sequence[str],
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """One row per (variant, subject or "average", metric) that pairs with the reference; the
    CIs cover 1 - alpha."""
    variants = list(dict.fromkeys(v for (v, _, _) in per_sample if v != reference))
    subjects = list(dict.fromkeys(sub for (_, sub, _) in per_sample))
    rows = []
    for variant in variants:
        for metric in metrics:
            found: dict[str, tuple[np.ndarray, int]] = {}
            for subject in subjects:
                diff = subject_differences(per_sample, variant, reference, subject, metric)
                if diff is not None:
                    found[subject] = diff
            for subject, (d, pairs) in found.items():
                low, high = bootstrap_ci(
                    [d], n_boot, _stream(seed, variant, metric, subject), 1 - alpha
                )
                p = wilcoxon_p(d)
                rows.append(
                    [variant, subject, metric, float(d.mean()), low, high, p, len(d), pairs]
                )
            if found:
                groups = [d for d, _ in found.values()]
                low, high = bootstrap_ci(
                    groups, n_boot, _stream(seed, variant, metric, AVERAGE), 1 - alpha
                )
                delta = float(np.mean([g.mean() for g in groups]))
                p = wilcoxon_p(np.concatenate(groups))
                n = sum(len(g) for g in groups)
                pairs = sum(k for _, k in found.values())
                rows.append([variant, AVERAGE, metric, delta, low, high, p, n, pairs])
    return pd.DataFrame(rows, columns=list(COLUMNS))
