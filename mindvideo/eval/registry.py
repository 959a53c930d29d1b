"""The metric registry: what each reported metric is, and how to read its name.

Every metric the benchmark logs is described here once: the function that computes its scores,
what that needs, which way is better, a short label, its analytic chance level and whether it
measures the stimulus rather than the reconstruction. Families with parameters in their names
(`video_50way_top1_strict`, `retrieval50_text_top1`, `*loss`, `*_epe`) are registered with
their pattern; `metric_info` is the only place a metric name is parsed. A name logged with its
stage's prefix (`cotrain.val_loss`) is described by its last part, but keeps the whole name as
its label (two stages may log the same metric).

A name nothing here describes is `known=False`: higher is better, its name is its label, no
chance level, not a stimulus measure (the report's behaviour for any metric it did not know).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

# What a metric's computation needs (MetricInfo.needs).
NEEDS = {
    "frames": "the reconstructed and the stimulus frames",
    "video": "at least 2 frames per clip (temporal metrics, optical flow)",
    "frame_judge": "an image classifier scoring each frame (eval.judges.frame)",
    "video_judge": "a video classifier scoring each clip (eval.judges.video)",
    "clip": "a CLIP image encoder (eval.clip)",
    "embeddings": "fMRI embeddings and the CLIP embeddings of their stimuli",
    "scenes": "the stimuli's scene annotations (distractors come from other scenes)",
    "training": "a stage's training or held-out data: the stage logs it, no protocol scores it",
}
# What a metric measures: figures group by it (semantic vs pixel trade-off).
Aspect = Literal["semantic", "pixel", "temporal", "colour", "motion", "training", "other"]
# The standard error `mindvideo.eval.metrics.summarise` gives a metric: success probabilities
# (binomial SE) or means of continuous per-sample values.
Kind = Literal["proportion", "mean"]
# Ground-truth top classes that count as correct under the published N-way rule (MinD-Video):
# its chance level is 3 / (N + 2); the `_strict` variants count only the top class (1 / N).
PUBLISHED_GT_TOP = 3
_METRICS_MODULE = "mindvideo.eval.metrics"


@dataclass(frozen=True)
class MetricInfo:
    """One metric, as the benchmark reports it."""

    name: str  # the name asked about, e.g. "cotrain.val_loss"
    family: str  # the registered metric or family it resolved to ("unknown": none)
    label: str  # short column header / axis label
    higher_is_better: bool | None  # None: no better direction (compared with the stimulus's)
    aspect: Aspect
    needs: frozenset[str]  # keys of NEEDS
    # the function computing its per-sample scores ("module.function"); "" where a stage
    # computes it inline (losses)
    computed_by: str = ""
    kind: Kind = "mean"
    stimulus_level: bool = False  # a measure of the test stimuli: context, compared with nothing
    stimulus: str | None = None  # the same quantity measured on the stimuli (a column name)
    decimals: int | None = None  # fixed decimals in tables; None: from the values' size
    n_way: int | None = None  # N-way and retrieval metrics
    top_k: int | None = None
    strict: bool = False  # N-way: only the ground truth's top class counts as correct
    variant: str | None = None  # clip_pcc: "adjacent" / "allpairs"; retrieval: "image" / "text"
    stage: str | None = None  # the stage prefix of the name, if it had one
    known: bool = True

    @property
    def ranked(self) -> bool:
        """False for a metric with no better direction: tables give it no arrow, no bold."""
        return self.higher_is_better is not None

    def chance(self, gt_top: int = PUBLISHED_GT_TOP) -> float | None:
        """The expected score of a reconstruction unrelated to the stimulus, where one follows
        from the protocol alone: N-way under a rule counting `gt_top` ground-truth classes
        (strict: 1), retrieval K/N; None for other metrics."""
        if self.family == "n_way":
            from mindvideo.eval.metrics import n_way_chance

            return n_way_chance(self.n_way, self.top_k, 1 if self.strict else gt_top)
        if self.family == "retrieval":
            return self.top_k / self.n_way
        return None

    @property
    def chance_rule(self) -> str:
        """The chance level's formula under the published rule, e.g. "3/(N+2)"; "" if none."""
        if self.family == "n_way" and not self.strict:
            return "3/(N+2)" if self.top_k == 1 else "1 - C(N-1,K)/C(N+2,K)"
        if self.family in ("n_way", "retrieval"):
            return "1/N" if self.top_k == 1 else "K/N"
        return ""

    def function(self) -> Callable:
        """The function computing the metric's per-sample scores (imported on demand)."""
        if not self.computed_by:
            raise LookupError(
                f"metric {self.name!r} is computed inside its stage, not by a registered function"
            )
        module, _, attr = self.computed_by.rpartition(".")
        return getattr(importlib.import_module(module), attr)


def _info(name: str, **fields) -> MetricInfo:
    return MetricInfo(name=name, family=name, **fields)


_FRAMES = frozenset({"frames"})
_CLIPS = frozenset({"frames", "video"})
_TRAINING = frozenset({"training"})
_NONE: frozenset[str] = frozenset()

# Metrics with one fixed name.
METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        _info(
            "ssim",
            label="SSIM",
            higher_is_better=True,
            aspect="pixel",
            needs=_FRAMES,
            computed_by=f"{_METRICS_MODULE}.ssim",
        ),
        _info(
            "psnr",
            label="PSNR",
            higher_is_better=True,
            aspect="pixel",
            needs=_FRAMES,
            computed_by=f"{_METRICS_MODULE}.psnr",
            decimals=2,  # dB: tens
        ),
        *(
            _info(
                f"clip_pcc_{variant}",
                label=f"CLIP-pcc ({short})",
                higher_is_better=True,
                aspect="temporal",
                needs=_CLIPS | {"clip"},
                computed_by=f"{_METRICS_MODULE}.clip_pcc",
                variant=variant,
            )
            for variant, short in (("adjacent", "adj."), ("allpairs", "all"))
        ),
        _info(
            "hue_sim",
            label="Hue sim.",
            higher_is_better=True,
            aspect="colour",
            needs=_FRAMES,
            computed_by=f"{_METRICS_MODULE}.hue_sim",
        ),
        _info(
            "epe",
            label="EPE",
            higher_is_better=False,
            aspect="motion",
            needs=_CLIPS,
            computed_by=f"{_METRICS_MODULE}.epe",
        ),
        _info(
            "motion_direction",
            label="Motion dir.",
            higher_is_better=True,
            aspect="motion",
            needs=_CLIPS,
            computed_by=f"{_METRICS_MODULE}.motion",
        ),
        # mean optical-flow magnitude over the whole frame (mostly static background), not the
        # object's displacement; a speed is compared with the stimulus's, not ranked
        _info(
            "motion_speed",
            label="Mean flow (px/frame)",
            higher_is_better=None,
            aspect="motion",
            needs=_CLIPS,
            computed_by=f"{_METRICS_MODULE}.motion",
            stimulus="motion_speed_truth",
        ),
        _info(
            "motion_speed_truth",
            label="Stimulus mean flow",
            higher_is_better=None,
            aspect="motion",
            needs=_CLIPS,
            computed_by=f"{_METRICS_MODULE}.motion",
            stimulus_level=True,
        ),
    )
}


def _n_way(name: str, m: re.Match) -> MetricInfo:
    unit, n, k = m["unit"], int(m["n"]), int(m["k"])
    label = f"{unit.capitalize()} {n}-way" + ("" if k == 1 else f" top-{k}")
    return MetricInfo(
        name=name,
        family="n_way",
        label=label + (" (strict)" if m["strict"] else ""),
        higher_is_better=True,
        aspect="semantic",
        needs=_FRAMES | {f"{unit}_judge"},
        computed_by=f"{_METRICS_MODULE}.n_way_top_k",
        kind="proportion",
        n_way=n,
        top_k=k,
        strict=bool(m["strict"]),
    )


def _retrieval(name: str, m: re.Match) -> MetricInfo:
    n, k = int(m["n"]), int(m["k"])
    return MetricInfo(
        name=name,
        family="retrieval",
        label=f"Retrieval {n}-way ({m['target']})" + ("" if k == 1 else f" top-{k}"),
        higher_is_better=True,
        aspect="semantic",
        needs=frozenset({"embeddings", "scenes"}),
        computed_by=f"{_METRICS_MODULE}.retrieval_top1",
        kind="proportion",
        n_way=n,
        top_k=k,
        variant=m["target"],
    )


def _lower_is_better(family: str, aspect: str, needs: frozenset[str]) -> Callable:
    """A family of error measures named freely (losses, end-point errors): lower is better."""

    def describe(name: str, m: re.Match) -> MetricInfo:
        return MetricInfo(
            name=name, family=family, label=name, higher_is_better=False, aspect=aspect, needs=needs
        )

    return describe


@dataclass(frozen=True)
class Family:
    """Metrics named by a pattern (matched against the whole name, stage prefix removed)."""

    name: str
    pattern: re.Pattern
    describe: Callable[[str, re.Match], MetricInfo]


# Tried in order after METRICS.
FAMILIES: tuple[Family, ...] = (
    Family(
        "n_way",
        re.compile(r"(?P<unit>video|frame)_(?P<n>\d+)way_top(?P<k>\d+)(?P<strict>_strict)?"),
        _n_way,
    ),
    Family(
        "retrieval",
        re.compile(r"retrieval(?P<n>\d+)_(?P<target>image|text)_top(?P<k>\d+)"),
        _retrieval,
    ),
    # losses of any stage, end-point errors, wall times (a stage's train_seconds, decode_seconds)
    Family("loss", re.compile(r".*loss"), _lower_is_better("loss", "training", _TRAINING)),
    Family("epe", re.compile(r".+_epe"), _lower_is_better("epe", "motion", _CLIPS)),
    Family("seconds", re.compile(r"(.+_)?seconds"), _lower_is_better("seconds", "cost", _NONE)),
    # a stage's peak memory (<stage>.peak_rss_gib, <stage>.peak_cuda_gib: harness/memory.py)
    Family("memory", re.compile(r"peak_(rss|cuda)_gib"), _lower_is_better("memory", "cost", _NONE)),
)


def _unknown(name: str) -> MetricInfo:
    return MetricInfo(
        name=name,
        family="unknown",
        label=name,
        higher_is_better=True,
        aspect="other",
        needs=frozenset(),
        known=False,
    )


@lru_cache(maxsize=1024)
def metric_info(name: str) -> MetricInfo:
    """The description of a metric as logged (`ssim`, `video_2way_top1_strict`,
    `cotrain.val_loss`); an unknown name gives `known=False` with the defaults above."""
    stage, _, base = name.rpartition(".")
    info = METRICS.get(base)
    if info is None:
        for family in FAMILIES:
            match = family.pattern.fullmatch(base)
            if match:
                info = family.describe(base, match)
                break
        else:
            return _unknown(name)
    if not stage:
        return info
    return replace(
        info,
        name=name,
        label=name,
        stage=stage,
        stimulus=f"{stage}.{info.stimulus}" if info.stimulus else None,
    )
