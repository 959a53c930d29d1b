"""Stage `diffusion`: the image diffusion model that the video generator inflates.

For SynthCC it trains our stand-in for Stable Diffusion: a small `AutoencoderKL` on the
training frames, then a `UNet2DConditionModel` text-to-image on their latents, conditioned on
the synthetic CLIP's text token states (with the zero condition in a share of the steps, for
guidance). It reports the autoencoder's PSNR on test frames, the UNet's held-out
noise-prediction loss with the caption and with the zero condition (the gap is what the
condition carries), and draws test captions: `samples.png` (real frame over generated) and
`sample_class_top1`, how often the synthetic CLIP classifies a generated frame as its
caption's shape and colour (`sample_class_top1_real`: the same on the real frames). For real
data it records an SD 1.5 folder given by path, after loading it once. The run seed is not
used: one model serves every run (its seed is config).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mindvideo.errors import ConfigError
from mindvideo.models.diffusion_config import DiffusionConfig
from mindvideo.stages.base import Stage, StageContext, StageResult, dataset_root

SAMPLES = "samples.png"


class DiffusionStageConfig(BaseModel):
    """Train (SynthCC) or point at (real data) the image diffusion model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    synthetic: bool = True
    pretrained: str | None = None  # an SD 1.5 diffusers folder (real data)
    model: DiffusionConfig = DiffusionConfig()


def work_units(cfg: DiffusionStageConfig) -> int:
    if not cfg.synthetic:
        return 1
    return cfg.model.vae.steps + cfg.model.unet.steps + 3


def run(
    cfg: DiffusionStageConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext
) -> StageResult:
    from mindvideo.models.diffusion import POINTER, load_image_diffusion

    out = Path(out)
    if not cfg.synthetic:
        if not cfg.pretrained:
            raise ConfigError(
                "real data needs a pre-trained Stable Diffusion folder: set diffusion.pretrained "
                "(the local diffusers SD 1.5 folder) in the profile or with --set"
            )
        model = load_image_diffusion(cfg.pretrained)  # fails here, clearly, if it cannot load
        (out / POINTER).write_text(json.dumps({"path": str(Path(cfg.pretrained))}) + "\n")
        ctx.progress(1, "pre-trained diffusion model recorded")
        metrics = {
            "cond_dim": float(model.cond_dim),
            "scaling_factor": model.scaling_factor,
        }
        return StageResult(metrics=metrics, artifacts=[Path(POINTER)])
    return _train(cfg.model, inputs, out, ctx)


def _train(
    cfg: DiffusionConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext
) -> StageResult:
    import torch

    from mindvideo.eval.foundation import load_foundation_clip
    from mindvideo.models import diffusion as D
    from mindvideo.models.clip import load_captioned_frames
    from mindvideo.models.diffusion import MODEL
    from mindvideo.train.image_diffusion import train_unet, train_vae

    started = time.perf_counter()
    dataset = dataset_root(inputs["dataset"])
    clip = load_foundation_clip(inputs["foundation"], ctx.device)
    train = load_captioned_frames(dataset, "train", 1)
    test = load_captioned_frames(dataset, "test", 3)
    all_frames = train.frames.numpy()
    vae = train_vae(
        all_frames[:: cfg.vae.frame_stride],
        cfg.vae,
        cfg.seed,
        ctx.device,
        ctx.progress,
        ctx.log_metric,
    )
    rng = np.random.default_rng([cfg.seed, 5])
    held = np.sort(rng.choice(len(test.frames), min(512, len(test.frames)), replace=False))
    test_frames = test.frames.numpy()[held]
    metrics = {"vae_psnr": D.psnr(D.decode(vae, D.encode(vae, test_frames)), test_frames)}
    ctx.progress(1, f"autoencoder PSNR {metrics['vae_psnr']:.2f} dB")

    scale = float(vae.config.scaling_factor)
    frames = all_frames[:: cfg.unet.frame_stride]
    caption_index = train.caption_index[:: cfg.unet.frame_stride]
    latents = D.encode(vae, frames) * scale  # (n, c, h, w)
    tokens = torch.from_numpy(clip.text_tokens(train.captions))  # (captions, context, width)
    scheduler = D.build_scheduler(cfg)
    unet = train_unet(
        latents,
        caption_index,
        tokens,
        cfg.unet,
        scheduler,
        cfg.seed,
        ctx.device,
        ctx.progress,
        ctx.log_metric,
    )
    test_latents = D.encode(vae, test_frames) * scale
    test_tokens = torch.from_numpy(clip.text_tokens(test.captions))[test.caption_index[held]]
    metrics["unet_val_loss"] = D.validation_loss(unet, scheduler, test_latents, test_tokens, 1)
    metrics["unet_val_loss_uncond"] = D.validation_loss(
        unet, scheduler, test_latents, torch.zeros_like(test_tokens), 1
    )
    ctx.progress(1, f"UNet held-out loss {metrics['unet_val_loss']:.4f}")
    model = D.ImageDiffusion(vae, unet, scheduler)
    model.save(out / MODEL)

    artifacts = [Path(MODEL)]
    if cfg.samples:
        metrics |= _samples(model, clip, test, held, test_frames, cfg, out, ctx.device, dataset)
        artifacts.append(Path(SAMPLES))
    ctx.progress(1, "samples drawn")
    metrics |= {
        "train_frames": float(len(frames)),
        "train_captions": float(len(train.captions)),
        "scaling_factor": scale,
        "train_seconds": time.perf_counter() - started,
    }
    return StageResult(metrics=metrics, artifacts=artifacts)


def _samples(model, clip, test, held, test_frames, cfg: DiffusionConfig, out, device, root):
    """Generate one frame for each of `cfg.samples` test captions (distinct, evenly spread)."""
    import torch
    from PIL import Image

    from mindvideo.models.clip import PROMPT, frame_class_names
    from mindvideo.models.inflated_unet import InflatedUNet
    from mindvideo.models.pipeline import MindVideoPipeline

    captions = test.caption_index[held].numpy()
    first = {}
    for i, c in enumerate(captions):
        first.setdefault(int(c), i)
    rows = sorted(first.values())
    rows = [rows[j] for j in np.linspace(0, len(rows) - 1, min(cfg.samples, len(rows))).astype(int)]
    tokens = torch.from_numpy(clip.text_tokens([test.captions[captions[r]] for r in rows]))
    unet = InflatedUNet(model.unet, frame_attention="none", temporal_layers=False)
    pipe = MindVideoPipeline.with_ddim(model.vae, unet, model.scheduler.config).to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    generated = pipe(
        tokens,
        frames=1,
        height=test_frames.shape[1],
        width=test_frames.shape[2],
        num_inference_steps=cfg.sample_steps,
        guidance_scale=cfg.guidance_scale,
        generator=g,
    )[:, 0]  # (samples, H, W, 3)
    # does the synthetic CLIP classify each generated frame as its caption's shape and colour?
    names = frame_class_names(root)
    prompts = clip.text_embeddings([PROMPT.format(n) for n in names])
    truth = test.frame_class[held].numpy()[rows]
    real = test_frames[rows]
    top1 = float(np.mean((clip.image_embeddings(generated) @ prompts.T).argmax(axis=1) == truth))
    real_top1 = float(np.mean((clip.image_embeddings(real) @ prompts.T).argmax(axis=1) == truth))
    real = test_frames[rows]
    sheet = np.concatenate(
        [np.concatenate(list(real), axis=1), np.concatenate(list(generated), axis=1)]
    )
    Image.fromarray(sheet).save(out / SAMPLES)
    (out / "samples.json").write_text(
        json.dumps([test.captions[captions[r]] for r in rows], indent=1) + "\n"
    )
    return {
        "sample_class_top1": top1,  # generated frames
        "sample_class_top1_real": real_top1,  # the same CLIP on the real frames: the ceiling
        "sample_chance": 1.0 / len(names),
    }


class DiffusionSection(DiffusionConfig):
    """The profile's `diffusion` section: the image diffusion model trained on SynthCC (these
    sizes), or SD 1.5 by path."""

    pretrained: str | None = Field(
        None, description="real data: a local diffusers Stable Diffusion 1.5 folder"
    )


def configure(profile, subject: str) -> DiffusionStageConfig:
    synthetic = profile.data.source == "synth"
    section = profile.diffusion.model_dump(exclude={"pretrained"})
    return DiffusionStageConfig(
        synthetic=synthetic,
        pretrained=None if synthetic else profile.diffusion.pretrained,
        model=section if synthetic else {},
    )


def enabled(profile) -> bool:
    """The generator's image model; for the autoencoder baseline, its VAE."""
    if profile.method == "mindvideo":
        return profile.stop_after is None
    return profile.method == "autoencoder"


STAGE = Stage(
    name="diffusion",
    run=run,
    config=DiffusionStageConfig,
    configure=configure,
    # 2: samples scored by frame class
    version=2,
    order=40,
    inputs=("dataset", "foundation"),
    enabled=enabled,
    sections={"diffusion": DiffusionSection},
    reads=("data",),
    seeded=False,
    artifacts=("model", "pretrained.json", SAMPLES),  # models/diffusion.py: MODEL, POINTER
    work_units=work_units,
    # Scored on the test stimuli (the synthetic-domain models' own check, no fMRI): not to tune on.
    test_split_metrics=("vae_psnr", "unet_val_loss", "sample_class_top1"),
    local_paths=lambda profile: {"diffusion.pretrained": "dir:model_index.json"},  # diffusers
)
