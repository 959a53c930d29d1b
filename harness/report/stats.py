"""Paired significance of each variant against the reference, at the level the design allows.

Every run's `evaluate` stage keeps its per-sample scores (`per_sample.npz`: metric -> (n,), the
scored clips' names and, where the dataset knows them, the clips' scenes). A variant and the
reference that decoded the same subject with the same seed are paired clip by clip (by name; by
position in older runs without names).

Test clips are not independent observations: the subjects watch the same stimuli, neighbouring
clips show the same scene and share an fMRI frame of their windows, and every seed retrains the
models. Two methods (`significance.method`):

- `block` (default): the unit of independence is the stimulus block, a scene (`__blocks__` in
  the per-sample scores) or, where scenes are unknown (real CC2017), `block_clips` consecutive
  clips of one segment. Seeds are a random effect crossed with the blocks. The standard error of
  the mean difference has two parts:
    * a block bootstrap: blocks are drawn with replacement, jointly for every subject and seed
      (they share the stimuli), and the variance of the resampled mean difference is taken;
    * the seeds': the variance of the per-seed mean differences over the seeds, divided by
      their number. It holds the clips' noise a second time (a conservative choice: with that
      part subtracted, as a method-of-moments estimate, the CI covered only 89% in the
      calibration, since three seeds often give an estimate of 0).
  The CI is the mean difference +- t * SE and the p-value the two-sided t test of the same
  statistic, with Satterthwaite's degrees of freedom (blocks - 1 and seeds - 1 for the two
  parts): with three seeds whose deltas disagree, a difference needs to be large to count.
  A block sign-flip test was tried in `bench/stats_calibration.py` and left out: it treats the
  seeds' shared offset as a true difference (its false-positive rate there is printed).
- `clip`: the earlier per-clip method, which assumes independent clips: a paired bootstrap
  percentile CI resampling clips (seeds averaged per clip) and the Wilcoxon signed-rank test.

P-values are corrected for multiple comparisons across the variants x metrics of each table (the
average, and each subject's) with Holm's method by default; `p_value` keeps the raw value and
`p_adjusted` the corrected one, which decides the table's marks.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.report.reference import Reference
from mindvideo.errors import ConfigError

# per_sample.npz holds, beside the metrics, the scored clips' names and, where the dataset
# knows them, their scenes (the evaluate stage writes both)
from mindvideo.stages.base import BLOCKS_KEY, NAMES_KEY

AVERAGE = "average"
METHODS = ("block", "clip")
BLOCKINGS = ("auto", "scene", "contiguous")
CORRECTIONS = ("holm", "none")
COLUMNS = (
    "variant",
    "subject",
    "metric",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "n",
    "pairs",
    "blocks",
    "df",
)

# (variant, subject, seed) -> metric -> per-sample scores (and NAMES_KEY -> names, if known)
PerSample = Mapping[tuple[str, str, int], Mapping[str, np.ndarray]]


def run_label(ident: tuple[str, str, int]) -> str:
    variant, subject, seed = ident
    return f"{variant} / {subject} / seed {seed}"


def _aligned(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], metric: str):
    """The two runs' scores of `metric` on their common samples, in b's order; None if they
    cannot be paired (a metric missing, or different sample counts and no names)."""
    if metric not in a or metric not in b:
        return None
    x, y = np.asarray(a[metric], float), np.asarray(b[metric], float)
    if NAMES_KEY in a and NAMES_KEY in b:
        if np.array_equal(a[NAMES_KEY], b[NAMES_KEY]):  # the usual case: the same clips in order
            return x, y, [str(n) for n in b[NAMES_KEY]]
        index = {str(n): i for i, n in enumerate(a[NAMES_KEY])}
        common = [(index[str(n)], j) for j, n in enumerate(b[NAMES_KEY]) if str(n) in index]
        if not common:
            return None
        ia, ib = map(list, zip(*common, strict=True))
        return x[ia], y[ib], [str(b[NAMES_KEY][j]) for j in ib]
    if len(x) != len(y):
        return None
    return x, y, None


def seed_differences(
    per_sample: PerSample, variant: str, reference: str, subject: str, metric: str
) -> tuple[np.ndarray, list[int], list[str] | None] | None:
    """Per-sample differences variant - reference on one subject, one row per seed both have
    that pairs on the same samples: ((seeds, n), the seeds, the samples' names or None)."""
    seeds = sorted(
        s
        for (v, sub, s) in per_sample
        if v == variant and sub == subject and (reference, subject, s) in per_sample
    )
    rows, kept, names = [], [], None
    for seed in seeds:
        pair = _aligned(
            per_sample[(variant, subject, seed)], per_sample[(reference, subject, seed)], metric
        )
        if pair is None:
            continue
        x, y, these = pair
        if rows and (len(x) != len(rows[0]) or (names is not None and these != names)):
            continue  # another seed scored other samples: pair only like with like
        names = these if names is None else names
        rows.append(x - y)
        kept.append(seed)
    if not rows:
        return None
    return np.stack(rows), kept, names


def subject_differences(
    per_sample: PerSample, variant: str, reference: str, subject: str, metric: str
) -> tuple[np.ndarray, int] | None:
    """Per-sample differences on one subject averaged over the seeds both have, with the
    number of seeds; None if none pair."""
    found = seed_differences(per_sample, variant, reference, subject, metric)
    if found is None:
        return None
    d, seeds, _ = found
    return d.mean(axis=0), len(seeds)


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
        d = d[np.isfinite(d)]
        idx = rng.integers(0, len(d), size=(n_boot, len(d)))
        stats += d[idx].mean(axis=1)
    stats /= len(groups)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def contiguous_blocks(names: Sequence[str], block_clips: int) -> list[str]:
    """Blocks of `block_clips` consecutive clips of one segment, from names <segment>_<clip>."""
    out = []
    for name in names:
        segment, _, clip = str(name).rpartition("_")
        if not segment or not clip.isdigit():
            raise ConfigError(
                f"clip name {name!r} is not <segment>_<clip>, so its stimulus block is unknown; "
                "set report.significance.method: clip"
            )
        out.append(f"{segment}#{int(clip) // block_clips}")
    return out


@dataclass(frozen=True)
class BlockDesign:
    """How clips group into stimulus blocks: `kind` is "scene" or "contiguous"."""

    kind: str
    block_clips: int
    scenes: Mapping[str, str]  # clip name -> scene block (empty for contiguous)

    def labels(self, names: Sequence[str]) -> list[str]:
        if self.kind == "scene":
            return [self.scenes[str(n)] for n in names]
        return contiguous_blocks(names, self.block_clips)

    def describe(self) -> str:
        if self.kind == "scene":
            return "scenes"
        return f"blocks of {self.block_clips} consecutive clips"


def block_design(per_sample: PerSample, blocks: str = "auto", block_clips: int = 5) -> BlockDesign:
    """The blocking of a report's runs: scenes where every run stored them (`auto`, `scene`),
    else contiguous clips. Raises ConfigError naming the runs that lack what is asked for."""
    if blocks not in BLOCKINGS:
        raise ConfigError(f"report.significance.blocks: {blocks!r}; use {', '.join(BLOCKINGS)}")
    unnamed = sorted(run_label(k) for k, v in per_sample.items() if NAMES_KEY not in v)
    if unnamed:
        raise ConfigError(
            f"a block bootstrap needs each scored clip's name, and the per_sample.npz of "
            f"{len(unnamed)} run(s) has none ({', '.join(unnamed[:5])}"
            f"{', ...' if len(unnamed) > 5 else ''}): re-run their evaluate stage, or set "
            "report.significance.method: clip (which assumes independent clips)"
        )
    sceneless = sorted(run_label(k) for k, v in per_sample.items() if BLOCKS_KEY not in v)
    if blocks == "scene" and sceneless:
        raise ConfigError(
            f"report.significance.blocks: scene, but the per_sample.npz of {len(sceneless)} "
            f"run(s) has no scene labels ({', '.join(sceneless[:5])}"
            f"{', ...' if len(sceneless) > 5 else ''}; the dataset's <segment>_clips.csv has no "
            "scene column, or the runs were scored before scenes were kept): set blocks: "
            "contiguous (or auto)"
        )
    if blocks == "contiguous" or sceneless:
        return BlockDesign("contiguous", block_clips, {})
    scenes: dict[str, str] = {}
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    for ident, scores in per_sample.items():
        names, blocks = scores[NAMES_KEY], scores[BLOCKS_KEY]
        if any(np.array_equal(names, n) and np.array_equal(blocks, b) for n, b in seen):
            continue  # most runs score the same clips: check each labelling once
        seen.append((names, blocks))
        for name, block in zip(names.tolist(), blocks.tolist(), strict=True):
            name, block = str(name), str(block)
            if scenes.setdefault(name, block) != block:
                raise ConfigError(
                    f"run {run_label(ident)} puts clip {name} in scene {block}, another run in "
                    f"{scenes[name]}: the runs were scored on different data; report them apart"
                )
    return BlockDesign("scene", block_clips, scenes)


@dataclass(frozen=True)
class Estimate:
    delta: float
    se: float
    df: float
    blocks: int

    def ci(self, level: float) -> tuple[float, float]:
        from scipy.stats import t

        if not np.isfinite(self.se):
            return math.nan, math.nan
        half = float(t.ppf(0.5 + level / 2, self.df)) * self.se if self.se > 0 else 0.0
        return self.delta - half, self.delta + half

    def p_value(self) -> float:
        from scipy.stats import t

        if not np.isfinite(self.se):
            return math.nan
        if self.se == 0:
            return 1.0 if self.delta == 0 else 0.0
        return float(2 * t.sf(abs(self.delta) / self.se, self.df))


def block_estimate(
    cells: Sequence[tuple[np.ndarray, Sequence[int], Sequence[str]]],
    n_boot: int,
    seed: int,
) -> Estimate:
    """Mean difference and its SE over one or more subjects' paired differences.

    `cells`: per subject, (differences (seeds, clips), the seeds, each clip's block label).
    The estimate is the mean over subjects of the mean over seeds of each run's mean
    difference (the table's delta). Blocks are shared by label across subjects, seeds by
    number; see the module docstring for the two parts of the SE."""
    labels = sorted({b for _, _, blocks in cells for b in blocks})
    seeds = sorted({k for _, ks, _ in cells for k in ks})
    index = {b: i for i, b in enumerate(labels)}
    B, K, S = len(labels), len(seeds), len(cells)
    sums = np.zeros((S, K, B))
    counts = np.zeros((S, K, B))
    present = np.zeros((S, K), bool)
    for s, (d, ks, blocks) in enumerate(cells):
        cols = np.array([index[b] for b in blocks])
        for row, k in zip(d, ks, strict=True):
            j = seeds.index(k)
            ok = np.isfinite(row)
            np.add.at(sums[s, j], cols[ok], row[ok])
            np.add.at(counts[s, j], cols[ok], 1.0)
            present[s, j] = ok.any()
    if not present.any():
        return Estimate(math.nan, math.nan, math.nan, B)

    def run_means(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(present, num / den, np.nan)  # (..., S, K)

    def estimate(means: np.ndarray) -> np.ndarray:
        return np.nanmean(np.nanmean(means, axis=-1), axis=-1)  # over seeds, then subjects

    means = run_means(sums.sum(-1), counts.sum(-1))  # (S, K)
    delta = float(estimate(means))
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(B, np.full(B, 1.0 / B), size=n_boot).astype(float)  # (n_boot, B)
    boot = run_means(
        np.einsum("nb,skb->nsk", weights, sums), np.einsum("nb,skb->nsk", weights, counts)
    )  # (n_boot, S, K)
    v_blocks = float(np.nanvar(estimate(boot), ddof=1)) if B > 1 else 0.0
    v_seeds, df_seeds = 0.0, math.inf
    if K > 1:
        seed_means = np.nanmean(means, axis=0)  # (K,) each seed's mean over the subjects
        v_seeds = float(np.nanvar(seed_means, ddof=1)) / K
        df_seeds = K - 1
    var = v_blocks + v_seeds
    parts = [(v_blocks, max(B - 1, 1)), (v_seeds, df_seeds)]
    denom = sum(v * v / df for v, df in parts if v > 0 and np.isfinite(df))
    df = var * var / denom if denom > 0 else max(B - 1, 1)
    return Estimate(delta, math.sqrt(var), float(df), B)


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted)."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok) == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def paired_tests(
    per_sample: PerSample,
    reference: str | Reference,
    metrics: Sequence[str],
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    method: str = "block",
    blocks: str = "auto",
    block_clips: int = 5,
    correction: str = "holm",
    per_subject: bool = True,
) -> pd.DataFrame:
    """One row per (variant, subject or "average", metric) that pairs with the reference (only
    the average's without `per_subject`); the CIs cover 1 - alpha. `attrs` holds the method,
    correction and blocking used."""
    if method not in METHODS:
        raise ConfigError(f"report.significance.method: {method!r}; use {', '.join(METHODS)}")
    if correction not in CORRECTIONS:
        raise ConfigError(
            f"report.significance.correction: {correction!r}; use {', '.join(CORRECTIONS)}"
        )
    design = block_design(per_sample, blocks, block_clips) if method == "block" else None
    reference_of = Reference.of(reference).of_variant  # one reference, or each row's own
    variants = list(dict.fromkeys(v for (v, _, _) in per_sample if reference_of(v) is not None))
    subjects = list(dict.fromkeys(sub for (_, sub, _) in per_sample))
    rows, most_seeds = [], 0
    for variant in variants:
        for metric in metrics:
            found = {}
            for subject in subjects:
                diff = seed_differences(per_sample, variant, reference_of(variant), subject, metric)
                if diff is not None:
                    found[subject] = diff
            most_seeds = max([most_seeds, *(len(found[s][1]) for s in found)])
            scopes = [(s, [s]) for s in found] if per_subject else []
            scopes += [(AVERAGE, list(found))] if found else []
            for scope, members in scopes:
                stream = _stream(seed, variant, metric, scope)
                n = sum(found[s][0].shape[1] for s in members)
                pairs = sum(len(found[s][1]) for s in members)
                if design is None:
                    per_clip = [found[s][0].mean(axis=0) for s in members]
                    low, high = bootstrap_ci(per_clip, n_boot, stream, 1 - alpha)
                    delta = float(np.mean([np.nanmean(g) for g in per_clip]))
                    p = wilcoxon_p(np.concatenate(per_clip))
                    rows.append([variant, scope, metric, delta, low, high, p, n, pairs, 0, n - 1])
                    continue
                cells = [(found[s][0], found[s][1], design.labels(found[s][2])) for s in members]
                est = block_estimate(cells, n_boot, stream)
                low, high = est.ci(1 - alpha)
                rows.append(
                    [variant, scope, metric, est.delta, low, high, est.p_value(), n, pairs]
                    + [est.blocks, est.df]
                )
    columns = [c for c in COLUMNS if c != "p_adjusted"]
    out = pd.DataFrame(rows, columns=columns)
    out.insert(columns.index("p_value") + 1, "p_adjusted", np.nan)
    if not out.empty:
        for _, part in out.groupby("subject", sort=False):  # each table corrects its own cells
            adjusted = holm(part["p_value"]) if correction == "holm" else part["p_value"]
            out.loc[part.index, "p_adjusted"] = adjusted
    out.attrs = {
        "method": method,
        "correction": correction,
        "blocking": design.describe() if design is not None else "",
        "seeds": most_seeds,  # the most seeds any test paired
    }
    return out
