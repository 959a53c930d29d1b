"""The baselines: ridge retrieval, the shuffled-fMRI control and chance, decoded and scored.

The `baselines` stage decodes one of them per run; `mvbench baselines` decodes and scores all.

- ridge: ridge regression from the fMRI window to clip features (the domain CLIP's image
  embeddings of the clip's frames and/or downsampled pixels), then the reconstruction is the
  average of the top-k training clips whose features best match the prediction (in the
  spirit of Nishimoto et al. 2011);
- shuffled: the same decoder with the test fMRI permuted across test samples: the chance
  floor of any decoder on this data;
- chance: the average of k random training clips;
- autoencoder: the true test frames through the generator's autoencoder (the `diffusion`
  stage's VAE, or SD 1.5's): the pixel ceiling of any decoder that generates in its latents.
The clips decoded are those of `split` (eval.split): test, or validation for tuning; the test
fMRI above is then the validation fMRI.
"""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mindvideo.data.cc2017 import open_stimuli
from mindvideo.data.paired import (
    PairingConfig,
    clip_video,
    make_samples,
    open_training,
    prepare_fmri,
)
from mindvideo.errors import ConfigError
from mindvideo.eval.video_io import write_reconstructions
from mindvideo.models.ridge import RidgeDecoder, retrieve

Method = Literal["ridge", "shuffled", "random-train-clip", "autoencoder"]


class BaselineOptions(BaseModel):
    """How the baselines decode: the profile's `baselines` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: tuple[Literal["clip", "pixels", "labels"], ...] = ("clip", "pixels", "labels")
    pixel_size: int = Field(8, ge=2, le=64, description="pixel features: frames resized to this")
    top_k: int = Field(
        1, ge=1, le=10_000, description="training clips averaged into a reconstruction"
    )
    alphas: tuple[float, ...] = (1e1, 1e2, 1e3, 1e4, 1e5)
    folds: int = Field(4, ge=2, le=100)


def refuse_old_names(methods):
    """A list of baseline names as given, or ValueError for a name that has changed."""
    if isinstance(methods, list | tuple) and "chance" in methods:
        raise ValueError(
            "'chance' is now 'random-train-clip' (random real training clips: a data baseline, "
            "not chance level, which is analytic and in the tables' captions); rename it"
        )
    return methods


class BaselinesConfig(BaselineOptions, PairingConfig):
    """Which baselines, on which subject, decoding which features."""

    methods: tuple[Method, ...] = ("ridge", "shuffled", "random-train-clip")
    _renamed = field_validator("methods", mode="before")(refuse_old_names)
    split: Literal["val", "test"] = Field("test", description="the clips decoded (eval.split)")


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
    from mindvideo.data.frames import resize_frames

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


@dataclass
class Decoded:
    """The test clips decoded by each baseline, in test-sample order."""

    names: list[str]  # <segment>_<clip:03d>
    truth: np.ndarray  # (n, F, H, W, 3) uint8
    scene_cut: np.ndarray  # (n,) bool
    clips: dict[str, np.ndarray]  # method -> (n, F, H, W, 3) uint8
    ridge_alpha: float | None


@dataclass
class _Prepared:
    """One subject's samples, clip bank and (once fitted) ridge decoder."""

    stimuli: object
    train: object
    test: object
    bank: np.ndarray  # (n_train, F, H, W, 3) uint8
    truth: np.ndarray  # (n_test, F, H, W, 3) uint8
    decoder: RidgeDecoder | None = None
    y_train: np.ndarray | None = None


# Within one process, the methods and seeds of a subject share its preprocessing and its ridge
# fit (both deterministic): a suite over 3 seeds fits once per subject, not once per run.
_MEMO: OrderedDict[str, _Prepared] = OrderedDict()
MEMO_SIZE = 2


def _prepare(
    dataset: Path, cfg: BaselinesConfig, memo_key: str | None, tick: Callable[[int, str], None]
) -> _Prepared:
    key = None
    if memo_key is not None:
        key = json.dumps(
            [
                str(Path(dataset).resolve()),
                memo_key,
                cfg.model_dump(mode="json", exclude={"methods", "top_k"}),
            ],
            sort_keys=True,
        )
        if key in _MEMO:
            _MEMO.move_to_end(key)
            return _MEMO[key]
    stimuli = open_stimuli(dataset)
    rec = open_training(dataset, cfg.subject, cfg.val_segments, cfg.train_fraction)
    fmri = prepare_fmri(rec, cfg.preprocess)
    tick(1, f"{cfg.subject} preprocessed")
    pad = cfg.preprocess.patch_size
    edge = cfg.window_edge
    train = make_samples(fmri, "train", cfg.window, cfg.window_offset, edge, pad, stimuli)
    test = make_samples(fmri, cfg.split, cfg.window, cfg.window_offset, edge, pad, stimuli)
    prepared = _Prepared(
        stimuli,
        train,
        test,
        clip_video(stimuli, train, cfg.frames_per_clip),
        clip_video(stimuli, test, cfg.frames_per_clip),
    )
    if key is not None:
        _MEMO[key] = prepared
        while len(_MEMO) > MEMO_SIZE:
            _MEMO.popitem(last=False)
    return prepared


def decode_baselines(
    dataset: Path,
    cfg: BaselinesConfig,
    clip_model,
    seed: int,
    progress: Callable[[int, str], None] | None = None,
    memo_key: str | None = None,
    vae=None,
) -> Decoded:
    """Decode the clips of cfg.split (test or val) of one subject with each baseline in
    cfg.methods.

    `memo_key` (the identity of `clip_model`, e.g. its folder) lets later calls in this process
    reuse the subject's preprocessing and ridge fit; None recomputes them. `vae` (an
    AutoencoderKL) is needed by the autoencoder baseline only."""
    tick = progress or (lambda n, what: None)
    data = _prepare(dataset, cfg, memo_key, tick)
    train, test, bank = data.train, data.test, data.bank
    names = [f"{s}_{c:03d}" for s, c in zip(test.segment, test.clip, strict=True)]
    # Each subject draws its own shuffles and chance clips: with one stream for all, every
    # subject's chance baseline would be the same clips.
    rng = np.random.default_rng([seed, zlib.crc32(cfg.subject.encode())])

    x_test = test.fmri.reshape(len(test), -1)
    if {"ridge", "shuffled"} & set(cfg.methods) and data.decoder is None:
        labels = label_features(data.stimuli, train) if "labels" in cfg.features else None
        data.y_train = clip_features(bank, cfg.features, cfg.pixel_size, clip_model, labels)
        x_train = train.fmri.reshape(len(train), -1)
        data.decoder = RidgeDecoder(cfg.alphas, cfg.folds).fit(x_train, data.y_train, train.segment)
        tick(1, f"{cfg.subject} ridge fitted (alpha {data.decoder.alpha:g})")
    decoder = data.decoder if {"ridge", "shuffled"} & set(cfg.methods) else None

    clips: dict[str, np.ndarray] = {}
    for method in cfg.methods:
        if method == "autoencoder":
            from mindvideo.models.diffusion import round_trip

            if vae is None:
                raise ConfigError("the autoencoder baseline needs the diffusion stage's VAE")
            clips[method] = round_trip(vae, data.truth)
            tick(1, f"{cfg.subject} {method} decoded")
            continue
        if method == "random-train-clip":
            picks = rng.integers(0, len(bank), size=(len(test), cfg.top_k))
        else:
            x = x_test if method == "ridge" else x_test[rng.permutation(len(test))]
            picks = retrieve(decoder.predict(x), data.y_train, cfg.top_k)
        clips[method] = bank[picks].astype(np.float32).mean(axis=1).round().astype(np.uint8)
        tick(1, f"{cfg.subject} {method} decoded")
    return Decoded(
        names=names,
        truth=data.truth,
        scene_cut=np.asarray(test.scene_cut, dtype=bool),
        clips=clips,
        ridge_alpha=None if decoder is None else float(decoder.alpha),
    )


def run_baselines(
    dataset: Path,
    cfg: BaselinesConfig,
    scorers,  # mindvideo.eval.protocols.Scorers
    seed: int,
    out: Path | None = None,
    progress: Callable[[int, str], None] | None = None,
    protocol: str = "mindvideo",
) -> dict[str, dict[str, float]]:
    """Decode the test clips of one subject with each baseline and score them."""
    from mindvideo.eval.protocols import get_protocol, score

    tick = progress or (lambda n, what: None)
    decoded = decode_baselines(dataset, cfg, scorers.clip, seed, tick)
    results: dict[str, dict[str, float]] = {}
    for method, recon in decoded.clips.items():
        report = score(
            list(recon),
            list(decoded.truth),
            get_protocol(protocol),
            scorers,
            decoded.scene_cut,
            seed,
        )
        results[method] = dict(report.metrics)
        if decoded.ridge_alpha is not None and method != "random-train-clip":
            results[method]["ridge_alpha"] = decoded.ridge_alpha
        if out is not None:
            write_reconstructions(
                Path(out) / method, decoded.names, recon, fps=cfg.frames_per_clip / 2.0
            )
        tick(1, f"{cfg.subject} {method} scored")
    return results
