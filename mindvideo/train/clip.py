"""Training the synthetic-domain CLIP on a SynthCC dataset's training frames and captions (an
open_clip model, a contrastive loss with sub-captions); mindvideo.models.clip loads it."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import set_model_preprocess_cfg
from safetensors.torch import save_file

from mindvideo.data.cc2017 import read_metadata, resolve_root
from mindvideo.models.clip import (
    FOLDER,
    MAX_LOGIT_SCALE,
    METRICS_FILE,
    MODEL_CONFIG_FILE,
    OPEN_CLIP_CONFIG_FILE,
    VERSION,
    WEIGHTS_FILE,
    ClipModel,
    Progress,
    build_clip,
    build_tokenizer,
    evaluate_frames,
    frame_class_names,
    frames_to_pixels,
    load_captioned_frames,
    model_config,
)
from mindvideo.models.clip_config import ClipConfig, work_units  # noqa: F401  (re-exported)
from mindvideo.train.loop import fit_epochs, steps_per_epoch
from mindvideo.train.schedules import warmup_cosine


def sub_caption(caption: str, words: tuple[int, int], rng: np.random.Generator) -> str:
    """k random words of `caption` in their order, k uniform in `words` (a partial description)."""
    tokens = caption.split()
    k = int(rng.integers(words[0], words[1] + 1))
    if k >= len(tokens):
        return caption
    keep = np.sort(rng.choice(len(tokens), k, replace=False))
    return " ".join(tokens[i] for i in keep)


def contrastive_loss(
    image: torch.Tensor, text: torch.Tensor, positives: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE with several positives per row.

    image (B, D) and text (T, D) are L2-normalised; positives (T, B) is True where text t
    describes image b (every text and every image needs at least one). Each direction is a
    cross-entropy against the uniform distribution over the row's positives; with one positive
    per row this is open_clip's ClipLoss. Frames of one scene share a caption, so counting only
    a diagonal would push duplicates apart as negatives.
    """
    logits = logit_scale * image @ text.T  # (B, T)
    pos = positives.float()
    image_targets = pos.T / pos.T.sum(1, keepdim=True)  # (B, T)
    text_targets = pos / pos.sum(1, keepdim=True)  # (T, B)
    image_to_text = -(image_targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    text_to_image = -(text_targets * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return 0.5 * (image_to_text + text_to_image)


def caption_positives(texts: Sequence[str], captions: Sequence[str]) -> torch.Tensor:
    """(T, C) True where every word of texts[t] occurs in captions[c].

    A sub-caption ("red triangle") is a true description of every frame whose caption contains
    its words, so all those frames are its positives, not only the scene it was cut from.
    """
    words = [set(c.split()) for c in captions]
    return torch.tensor([[set(t.split()) <= w for w in words] for t in texts], dtype=torch.bool)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # As open_clip's trainer: no decay on norms, biases, other 1-D parameters or the temperature.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        exclude = p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _channel_stats(frames: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = frames.reshape(-1, 3).double() / 255.0
    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-3)
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


def _train(
    root: Path, cfg: ClipConfig, progress: Progress
) -> tuple[open_clip.CLIP, dict, dict, dict[str, float]]:
    """Train and evaluate; returns (model, open_clip model config, preprocess config, metrics)."""
    meta = read_metadata(root)
    height, width = int(meta.get("height", 0)), int(meta.get("width", 0))
    train = load_captioned_frames(root, "train", cfg.frame_stride)
    test = load_captioned_frames(root, "test", 1)
    class_names = frame_class_names(root)
    size = cfg.image_size or min(height or train.frames.shape[1], width or train.frames.shape[2])
    model_cfg = model_config(cfg, size)
    mean, std = _channel_stats(train.frames)
    preprocess_cfg = {
        "size": size,
        "mode": "RGB",
        "mean": mean,
        "std": std,
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_clip(model_cfg)
    set_model_preprocess_cfg(model, preprocess_cfg)
    tokenizer = build_tokenizer(cfg.context_length)
    rng = np.random.default_rng([cfg.seed, 1])  # batch order and sub-captions

    n = train.frames.shape[0]
    total = steps_per_epoch(n, cfg.batch_size) * cfg.epochs  # whole batches only
    warmup_steps = max(1, round(cfg.warmup * total))
    optimiser = torch.optim.AdamW(
        _param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6
    )
    model.train()
    started = time.perf_counter()

    def batch_loss(batch: np.ndarray) -> torch.Tensor:
        idx = torch.from_numpy(batch)
        present, caption_of_image = torch.unique(train.caption_index[idx], return_inverse=True)
        captions = [train.captions[i] for i in present.tolist()]
        texts = list(captions)
        if cfg.sub_caption_words is not None:
            # Sub-captions ("red triangle", "small over") are shared by many scenes, so the
            # image tower must learn each attribute instead of recognising training scenes.
            texts += [sub_caption(c, cfg.sub_caption_words, rng) for c in captions]
        positives = caption_positives(texts, captions)[:, caption_of_image]  # (T, B)
        pixels = frames_to_pixels(train.frames[idx], size, mean, std)  # (B, 3, size, size)
        image = model.encode_image(pixels, normalize=True)  # (B, D)
        text = model.encode_text(tokenizer(texts), normalize=True)  # (T, D)
        return contrastive_loss(image, text, positives, model.logit_scale.exp())

    def clamp_scale() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def end_epoch(epoch: int, loss: float) -> None:
        progress(1, f"clip epoch {epoch + 1}/{cfg.epochs} loss {loss:.3f}")

    def lr_at(step: int, peak: float) -> float:
        return peak * warmup_cosine(step, total, warmup_steps)

    loss_value = fit_epochs(
        optimiser, batch_loss, rng, n, cfg, lr_at=lr_at, end=end_epoch, after_step=clamp_scale
    )
    seconds = time.perf_counter() - started

    clip = ClipModel(model, tokenizer, size, mean, std)
    metrics = evaluate_frames(clip, test, class_names)
    progress(1, "clip zero-shot evaluation")
    metrics.update(
        {
            "clip_train_loss": loss_value,
            "clip_train_seconds": seconds,
            "clip_train_frames": float(n),
            "clip_train_captions": float(len(train.captions)),
            "clip_logit_scale": float(model.logit_scale.exp().item()),
        }
    )
    return model, model_cfg, preprocess_cfg, metrics


def _provenance(cfg: ClipConfig) -> dict:
    """What metrics.json records of the training: code version, config, seed."""
    return {"version": VERSION, "config": cfg.model_dump(mode="json"), "seed": cfg.seed}


def train_domain_clip(
    root: Path,
    cfg: ClipConfig | None = None,
    progress: Progress | None = None,
    out: Path | None = None,
) -> dict:
    """Train the synthetic-domain CLIP on a SynthCC dataset's training frames and captions.

    Writes <root>/clip/ (or `out`: weights, model_config.json, open_clip_config.json,
    metrics.json) and returns the metrics: zero-shot top-1/top-5 over the frame classes and
    image->caption retrieval on the test segments. Not cached here: the `foundation` stage
    trains it once into the stage cache. Load the model with `load_clip(<root>/clip)`.
    """
    cfg = cfg or ClipConfig()
    root = resolve_root(Path(root))
    out = Path(out) if out is not None else root / FOLDER
    record = _provenance(cfg)

    tick = progress or (lambda n, what: None)
    model, model_cfg, preprocess_cfg, metrics = _train(root, cfg, tick)
    result = {**metrics, **record}

    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / MODEL_CONFIG_FILE).write_text(json.dumps(model_cfg, indent=1))
        (tmp / OPEN_CLIP_CONFIG_FILE).write_text(
            json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=1)
        )
        (tmp / METRICS_FILE).write_text(json.dumps(result, indent=1))
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result
