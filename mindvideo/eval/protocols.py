"""Named metric protocols: which metrics, on which frames and sizes, scored how.

`mindvideo` is the protocol of MinD-Video (and NeuroClips): N-way top-1 with the frame judge
(per frame, averaged) and the video judge (per clip), SSIM and PSNR per frame, and CLIP-pcc
between adjacent frames. `mind-animator` adds hue similarity, the end-point error of optical
flow and CLIP-pcc over all frame pairs. A profile can add metrics to either (`eval.extra_metrics`),
e.g. the direction and speed of motion. Before scoring, predictions and ground truth are brought
to the same frame count (evenly resampled) and resolution (bilinear, antialiased); clips that
span a scene cut can be excluded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from mindvideo.data.frames import resize_frames  # noqa: F401  (also scored here)
from mindvideo.errors import ConfigError, DataError
from mindvideo.eval import metrics as M
from mindvideo.eval.registry import PUBLISHED_GT_TOP, metric_info


@dataclass(frozen=True)
class Protocol:
    """A named, fully specified way of scoring reconstructions."""

    name: str
    metrics: tuple[str, ...]
    n_frames: int | None = 6  # frames per clip scored; None: the ground truth's count
    size: int | None = None  # square side both are resized to; None: the ground truth's
    trials: int = 100  # N-way trials per sample
    gt_top: int = PUBLISHED_GT_TOP  # ground-truth top classes that count as correct (1: strict)
    top_k: int = 1
    exclude_scene_cuts: bool = False
    n_boot: int = 1000
    description: str = ""


# N-way metrics: the published rule counts the ground truth's top-3 classes as correct (chance
# level 3 / (N + 2): 0.75 for 2-way); the `_strict` variants count only its argmax (chance 1/N).
SEMANTIC = (
    "video_2way_top1",
    "video_50way_top1",
    "frame_2way_top1",
    "frame_50way_top1",
    "video_2way_top1_strict",
    "video_50way_top1_strict",
    "frame_2way_top1_strict",
    "frame_50way_top1_strict",
)

PROTOCOLS: dict[str, Protocol] = {
    "mindvideo": Protocol(
        name="mindvideo",
        metrics=(*SEMANTIC, "ssim", "psnr", "clip_pcc_adjacent"),
        description="MinD-Video / NeuroClips: N-way top-1 (GT top-3 correct, 100 seeded "
        "trials), SSIM and PSNR per frame, CLIP-pcc of adjacent frames",
    ),
    "mind-animator": Protocol(
        name="mind-animator",
        metrics=(*SEMANTIC, "ssim", "psnr", "clip_pcc_allpairs", "hue_sim", "epe"),
        description="Mind-Animator: the semantic and pixel metrics plus hue similarity, "
        "Farneback end-point error and CLIP-pcc over all frame pairs",
    ),
}
# Metrics no published protocol has, that a profile can add to any (eval.extra_metrics):
# Farneback flow direction agreement and speed (mindvideo/eval/metrics.py `motion`).
MOTION = ("motion_direction", "motion_speed", "motion_speed_truth")
KNOWN_METRICS = tuple(dict.fromkeys(m for p in PROTOCOLS.values() for m in p.metrics)) + MOTION
# Identical frames have infinite PSNR; scores are capped here so that means stay finite.
PSNR_CAP_DB = 100.0


def get_protocol(name: str, extra_metrics=(), **overrides) -> Protocol:
    """The named protocol with `overrides` (None: the protocol's own) and `extra_metrics`
    scored after its own."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; available: {', '.join(PROTOCOLS)}")
    unknown = [m for m in extra_metrics if m not in KNOWN_METRICS]
    if unknown:
        raise ConfigError(
            f"eval.extra_metrics: unknown metric(s) {', '.join(map(repr, unknown))}; "
            f"available: {', '.join(KNOWN_METRICS)}"
        )
    protocol = replace(PROTOCOLS[name], **{k: v for k, v in overrides.items() if v is not None})
    added = tuple(m for m in dict.fromkeys(extra_metrics) if m not in protocol.metrics)
    return replace(protocol, metrics=protocol.metrics + added) if added else protocol


def resample_frames(clip: np.ndarray, n_frames: int) -> np.ndarray:
    """Pick n_frames evenly spaced frames (repeats frames when upsampling): (n_frames, ...)."""
    idx = np.floor(np.arange(n_frames) * clip.shape[0] / n_frames).astype(int)
    return clip[idx]


def normalise(clips: list[np.ndarray], n_frames: int, height: int, width: int) -> np.ndarray:
    """Stack clips of any frame count and size into (n, n_frames, height, width, 3) uint8."""
    return np.stack([resize_frames(resample_frames(c, n_frames), height, width) for c in clips])


@dataclass
class Scorers:
    """The models a protocol needs; a missing one skips its metrics (and says so)."""

    frame_judge: object | None = None  # mindvideo.eval.judges.Judge
    video_judge: object | None = None
    clip: object | None = None  # mindvideo.models.clip.ClipModel


@dataclass
class ScoreReport:
    protocol: str
    n_samples: int
    excluded_scene_cuts: int
    metrics: dict[str, float]
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)
    frame_positions: dict[str, list[float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "protocol": self.protocol,
            "n_samples": self.n_samples,
            "excluded_scene_cuts": self.excluded_scene_cuts,
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "frame_positions": self.frame_positions,
            "skipped": self.skipped,
        }


def chance_level(name: str, protocol: str = "mindvideo") -> float | None:
    """The analytic chance level of an N-way metric (`video_2way_top1`, `..._strict`) under
    `protocol`'s rule; None for a metric with no chance level (SSIM, PSNR, ...). The metric
    registry (mindvideo/eval/registry.py) holds the rule."""
    info = metric_info(name)
    if info.family != "n_way":
        return None
    return info.chance(PROTOCOLS[protocol].gt_top)


def score(
    pred: list[np.ndarray] | np.ndarray,
    truth: list[np.ndarray] | np.ndarray,
    protocol: Protocol,
    scorers: Scorers,
    scene_cut: np.ndarray | None = None,
    seed: int = 0,
) -> ScoreReport:
    """Score predicted clips against ground-truth clips (paired by position) under a protocol."""
    if len(pred) != len(truth):
        raise DataError(f"{len(pred)} predicted clips but {len(truth)} ground-truth clips")
    if len(truth) == 0:
        raise DataError("no clips to score")
    keep = np.ones(len(truth), dtype=bool)
    if protocol.exclude_scene_cuts:
        if scene_cut is None:
            raise DataError(
                "the protocol excludes clips spanning a scene cut, but the ground truth has no "
                "scene-cut flags (score against a dataset, or give scene_cuts.txt)"
            )
        keep = ~np.asarray(scene_cut, dtype=bool)
    n_frames = protocol.n_frames or int(truth[0].shape[0])
    if protocol.size:
        height = width = protocol.size
    else:
        height, width = truth[0].shape[1:3]
    idx = np.nonzero(keep)[0]
    p = normalise([pred[i] for i in idx], n_frames, height, width)
    t = normalise([truth[i] for i in idx], n_frames, height, width)
    n = len(idx)
    if n == 0:
        raise DataError("every clip spans a scene cut: nothing left to score")

    per: dict[str, np.ndarray] = {}
    positions: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}
    wanted = protocol.metrics
    info = {m: metric_info(m) for m in wanted}
    rng_seed = np.random.SeedSequence(seed)
    seeds = {
        name: int(s.generate_state(1)[0])
        for name, s in zip(wanted, rng_seed.spawn(len(wanted)), strict=True)
    }

    def n_way(m: str, pred_probs: np.ndarray, gt_probs: np.ndarray) -> np.ndarray:
        return M.n_way_top_k(
            pred_probs,
            gt_probs,
            n_way=info[m].n_way,
            top_k=protocol.top_k,
            trials=protocol.trials,
            gt_top=1 if info[m].strict else protocol.gt_top,
            seed=seeds[m],
        )

    def needing(model_name: str, model, missing: str) -> list[str]:
        """The wanted metrics that need `model_name`; all skipped when the model is missing."""
        metrics = [m for m in wanted if model_name in info[m].needs]
        if metrics and model is None:
            skipped.update({m: missing for m in metrics})
            return []
        return metrics

    frame_metrics = needing("frame_judge", scorers.frame_judge, "no frame judge")
    if frame_metrics:
        judge = scorers.frame_judge
        pp = judge.probs(p.reshape(-1, height, width, 3))  # (n*F, C)
        gp = judge.probs(t.reshape(-1, height, width, 3))
        for m in frame_metrics:
            s = n_way(m, pp, gp).reshape(n, n_frames)
            per[m] = s.mean(axis=1)
            positions[m] = [float(v) for v in s.mean(axis=0)]
    video_metrics = needing("video_judge", scorers.video_judge, "no video judge")
    if video_metrics:
        pp, gp = scorers.video_judge.probs(p), scorers.video_judge.probs(t)  # (n, C)
        for m in video_metrics:
            per[m] = n_way(m, pp, gp)
    if "ssim" in wanted:
        per["ssim"] = M.ssim(p, t).mean(axis=1)
    if "psnr" in wanted:
        per["psnr"] = M.psnr(p, t, max_db=PSNR_CAP_DB).mean(axis=1)
    clip_metrics = needing("clip", scorers.clip, "no CLIP model")
    if clip_metrics and n_frames < 2:
        skipped.update({m: "needs >= 2 frames" for m in clip_metrics})
    elif clip_metrics:
        emb = scorers.clip.image_embeddings(p.reshape(-1, height, width, 3))
        emb = emb.reshape(n, n_frames, -1)
        for m in clip_metrics:
            per[m] = M.clip_pcc(emb, variant=info[m].variant)
    if "hue_sim" in wanted:
        per["hue_sim"] = M.hue_sim(p, t)
    if "epe" in wanted:
        if n_frames < 2:
            skipped["epe"] = "needs >= 2 frames"
        else:
            per["epe"] = M.epe(p, t)
    motion_metrics = [m for m in wanted if m in MOTION]
    if motion_metrics:
        if n_frames < 2:
            skipped.update({m: "needs >= 2 frames" for m in motion_metrics})
        else:
            per.update({m: v for m, v in M.motion(p, t).items() if m in motion_metrics})

    summary: dict[str, float] = {}
    for m in wanted:
        if m not in per:
            continue
        summary.update(
            M.summarise(m, per[m], seed=seeds[m], n_boot=protocol.n_boot, kind=info[m].kind)
        )
    return ScoreReport(
        protocol=protocol.name,
        n_samples=n,
        excluded_scene_cuts=int((~keep).sum()),
        metrics=summary,
        per_sample=per,
        frame_positions=positions,
        skipped=skipped,
    )
