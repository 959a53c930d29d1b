"""Stage `baselines`: ridge retrieval, the shuffled-fMRI control and chance, decoded and scored.

- ridge: ridge regression from the fMRI window to clip features (the domain CLIP's image
  embeddings of the clip's frames and/or downsampled pixels), then the reconstruction is the
  average of the top-k training clips whose features best match the prediction (in the
  spirit of Nishimoto et al. 2011);
- shuffled: the same decoder with the test fMRI permuted across test samples: the chance
  floor of any decoder on this data;
- chance: the average of k random training clips.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mindvideo.data.cc2017 import open_stimuli, open_subject
from mindvideo.data.paired import clip_video, make_samples, prepare_fmri
from mindvideo.data.preprocess import PreprocessConfig
from mindvideo.eval.protocols import Scorers, get_protocol, resize_frames, score
from mindvideo.eval.video_io import write_clip_set
from mindvideo.models.ridge import RidgeDecoder, retrieve
from mindvideo.stages.base import StageContext, StageResult

NAME = "baselines"
INPUTS: tuple[str, ...] = ("simulate",)
VERSION = 1
Method = Literal["ridge", "shuffled", "chance"]


class BaselinesConfig(BaseModel):
    """Which baselines, on which subject, decoding which features."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = "subject1"
    methods: tuple[Method, ...] = ("ridge", "shuffled", "chance")
    features: tuple[Literal["clip", "pixels", "labels"], ...] = ("clip", "pixels", "labels")
    pixel_size: int = Field(8, ge=2, le=64, description="pixel features: frames resized to this")
    top_k: int = Field(1, ge=1, description="training clips averaged into a reconstruction")
    alphas: tuple[float, ...] = (1e1, 1e2, 1e3, 1e4, 1e5)
    folds: int = Field(4, ge=2)
    protocol: str = "mindvideo"
    preprocess: PreprocessConfig = PreprocessConfig()
    window: int = 2
    window_offset: int = 2
    window_edge: Literal["drop", "clamp"] = "drop"
    frames_per_clip: int = 6


CONFIG = BaselinesConfig


LABEL_COLUMNS = ("shape", "colour", "direction")


def label_features(stimuli, samples) -> np.ndarray | None:
    """One-hot shape, colour and direction of each sample's clip (SynthCC annotations), or None
    where the dataset has none (real data): (n, 26)."""
    tables = {seg: stimuli.clips(seg) for seg in dict.fromkeys(samples.segment)}
    if any(t is None or not set(LABEL_COLUMNS) <= set(t.columns) for t in tables.values()):
        return None
    rows = [
        tables[seg].loc[int(clip), list(LABEL_COLUMNS)].tolist()
        for seg, clip in zip(samples.segment, samples.clip, strict=True)
    ]
    values = np.array(rows, dtype=object)
    blocks = [
        (values[:, j][:, None] == np.unique(values[:, j])[None]).astype(np.float64)
        for j in range(values.shape[1])
    ]
    return np.concatenate(blocks, axis=1)


def clip_features(
    clips: np.ndarray,
    features: tuple[str, ...],
    pixel_size: int,
    clip_model=None,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Features of clips (n, F, H, W, 3): blocks z-scored and weighted equally: (n, f).

    "labels" (one-hot annotations) is used where given and skipped otherwise.
    """
    n, f = clips.shape[:2]
    blocks = []
    if "labels" in features and labels is not None:
        blocks.append(labels)
    if "pixels" in features:
        small = resize_frames(clips, pixel_size, pixel_size).reshape(n, -1).astype(np.float64)
        blocks.append(small)
    if "clip" in features:
        if clip_model is None:
            raise ValueError("clip features need a CLIP model")
        frames = clips.reshape(n * f, *clips.shape[2:])
        blocks.append(clip_model.image_embeddings(frames).reshape(n, -1).astype(np.float64))
    out = []
    for b in blocks:
        b = (b - b.mean(0)) / (b.std(0) + 1e-8)
        out.append(b / np.sqrt(b.shape[1]))
    return np.concatenate(out, axis=1)


def run_baselines(
    dataset: Path,
    cfg: BaselinesConfig,
    scorers: Scorers,
    seed: int,
    out: Path | None = None,
    progress: Callable[[int, str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Decode the test clips of one subject with each baseline and score them."""
    tick = progress or (lambda n, what: None)
    stimuli = open_stimuli(dataset)
    fmri = prepare_fmri(open_subject(dataset, cfg.subject), cfg.preprocess)
    tick(1, f"{cfg.subject} preprocessed")
    pad = cfg.preprocess.patch_size
    train = make_samples(
        fmri, "train", cfg.window, cfg.window_offset, cfg.window_edge, pad, stimuli
    )
    test = make_samples(fmri, "test", cfg.window, cfg.window_offset, cfg.window_edge, pad, stimuli)
    bank = clip_video(stimuli, train, cfg.frames_per_clip)  # (n_train, F, H, W, 3)
    truth = clip_video(stimuli, test, cfg.frames_per_clip)
    names = [f"{s}_{c:03d}" for s, c in zip(test.segment, test.clip, strict=True)]
    protocol = get_protocol(cfg.protocol)
    rng = np.random.default_rng(seed)

    x_train = train.fmri.reshape(len(train), -1)
    x_test = test.fmri.reshape(len(test), -1)
    decoder = None
    if {"ridge", "shuffled"} & set(cfg.methods):
        labels = label_features(stimuli, train) if "labels" in cfg.features else None
        y_train = clip_features(bank, cfg.features, cfg.pixel_size, scorers.clip, labels)
        decoder = RidgeDecoder(cfg.alphas, cfg.folds).fit(x_train, y_train, train.segment)
        tick(1, f"{cfg.subject} ridge fitted (alpha {decoder.alpha:g})")

    results: dict[str, dict[str, float]] = {}
    for method in cfg.methods:
        if method == "chance":
            picks = rng.integers(0, len(bank), size=(len(test), cfg.top_k))
        else:
            x = x_test if method == "ridge" else x_test[rng.permutation(len(test))]
            picks = retrieve(decoder.predict(x), y_train, cfg.top_k)
        recon = bank[picks].astype(np.float32).mean(axis=1).round().astype(np.uint8)
        report = score(list(recon), list(truth), protocol, scorers, test.scene_cut, seed)
        results[method] = dict(report.metrics)
        if decoder is not None and method != "chance":
            results[method]["ridge_alpha"] = float(decoder.alpha)
        if out is not None:
            folder = Path(out) / method
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / "clips.npy", recon)
            (folder / "names.txt").write_text("".join(f"{n}\n" for n in names))
            write_clip_set(
                folder / "samples", names[:4], recon[:4], fmt="gif", fps=cfg.frames_per_clip / 2.0
            )
        tick(1, f"{cfg.subject} {method} scored")
    return results


def run(
    cfg: BaselinesConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext
) -> StageResult:
    from mindvideo.eval.judges import load_synth_judges
    from mindvideo.models.clip import load_clip

    dataset = Path(inputs["simulate"]) / "synthcc"
    frame, video = load_synth_judges(dataset)
    scorers = Scorers(frame_judge=frame, video_judge=video, clip=load_clip(dataset / "clip"))
    results = run_baselines(dataset, cfg, scorers, ctx.seed, out, ctx.progress)
    flat = {f"{m}.{k}": v for m, metrics in results.items() for k, v in metrics.items()}
    for k, v in flat.items():
        ctx.log_metric(k, v, None)
    artifacts = [Path(m) / "clips.npy" for m in results]
    return StageResult(metrics=flat, artifacts=artifacts)
