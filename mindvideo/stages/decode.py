"""Stage `decode`: reconstruct the test clips of one subject from its fMRI.

The encoder (co-trained, or as the contrastive stage left it when co-training is off) turns
each test window into a condition; `MindVideoPipeline` denoises a clip from it with the
inflated UNet (co-trained, or freshly inflated from the image model) and adversarial guidance:
the negative condition is the encoder's embedding of the mean test fMRI (`test_mean`, as
MinD-Video), of the mean training fMRI, or zeros. Any number of frames per clip, any diffusers
scheduler. Writes clips.npy, names.txt and sample GIFs for the `evaluate` stage, and how the
time splits between the UNet, the VAE and the rest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mindvideo.data.cc2017 import open_stimuli
from mindvideo.data.paired import PairingConfig
from mindvideo.models.diffusion_config import DecodeOptions, GeneratorConfig, GuidanceConfig
from mindvideo.stages.base import StageContext, StageResult, dataset_root

NAME = "decode"
INPUTS: tuple[str, ...] = ("dataset", "contrastive", "diffusion", "cotrain")
OPTIONAL_INPUTS: tuple[str, ...] = ("cotrain",)  # absent with cotrain.enabled: false
VERSION = 1
SEEDED = True  # the initial noise


class DecodeConfig(PairingConfig):
    generator: GeneratorConfig = GeneratorConfig()
    guidance: GuidanceConfig = GuidanceConfig()
    decode: DecodeOptions = DecodeOptions()


CONFIG = DecodeConfig


def work_units(cfg: DecodeConfig) -> int:
    return 2


def negative_condition(encoder, which: str, train_fmri, test_fmri, device: str):
    """(1, tokens, dim): the encoder's embedding of the mean fMRI volume (repeated over the
    window) of the test or training set, or zeros."""
    import torch

    with torch.no_grad():
        probe = torch.from_numpy(test_fmri[:1]).to(device)
        if which == "zeros":
            return torch.zeros_like(encoder(probe))
        source = test_fmri if which == "test_mean" else train_fmri
        mean = source.mean(axis=(0, 1))  # (voxels,)
        window = np.broadcast_to(mean, (1, source.shape[1], mean.shape[0])).copy()
        return encoder(torch.from_numpy(window.astype(np.float32)).to(device))


def run(cfg: DecodeConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext) -> StageResult:
    import torch
    from safetensors.torch import load_file

    from mindvideo.models.pipeline import MindVideoPipeline, make_scheduler
    from mindvideo.stages.baselines import write_reconstructions
    from mindvideo.stages.contrastive import load_encoder, subject_windows
    from mindvideo.stages.cotrain import UNET_WEIGHTS, check_compatible, inflate
    from mindvideo.stages.diffusion import load_diffusion

    started = time.perf_counter()
    device = ctx.device
    trained = inputs.get("cotrain")
    encoder, voxels = load_encoder(trained or inputs["contrastive"], device)
    model = load_diffusion(inputs["diffusion"], device)
    check_compatible(encoder, model, cfg)
    unet = inflate(model.unet, cfg.generator, ctx.seed)
    if trained is not None:
        unet.load_state_dict(load_file(str(Path(trained) / UNET_WEIGHTS), device="cpu"))
    unet.to(device).eval()
    dataset = dataset_root(inputs["dataset"])
    stimuli = open_stimuli(dataset)
    _, train, test = subject_windows(dataset, cfg, stimuli, voxels=voxels)
    scheduler = make_scheduler(cfg.decode.scheduler, model.scheduler.config)
    pipe = MindVideoPipeline(model.vae, unet, scheduler)
    negative = negative_condition(encoder, cfg.guidance.negative, train.fmri, test.fmri, device)
    frames = cfg.decode.frames or cfg.frames_per_clip
    height, width = stimuli.frames(test.segment[0]).shape[1:3]
    ctx.progress(1, f"{cfg.subject}: decoding {len(test)} clips x {frames} frames")
    fmri = test.fmri
    if cfg.decode.shuffle_fmri:  # the shuffled-fMRI control
        fmri = fmri[np.random.default_rng([ctx.seed, 7]).permutation(len(fmri))]
    g = torch.Generator().manual_seed(ctx.seed)
    clips, unet_s, vae_s = [], 0.0, 0.0
    loop_started = time.perf_counter()
    for i in range(0, len(test), cfg.decode.batch_size):
        with torch.no_grad():
            cond = encoder(torch.from_numpy(fmri[i : i + cfg.decode.batch_size]).to(device))
        clips.append(
            pipe(
                cond,
                negative,
                frames=frames,
                height=height,
                width=width,
                num_inference_steps=cfg.decode.steps,
                guidance_scale=cfg.guidance.scale,
                eta=cfg.decode.eta,
                generator=g,
            )
        )
        unet_s += pipe.timings["unet"]
        vae_s += pipe.timings["vae"]
    loop = time.perf_counter() - loop_started
    clips = np.concatenate(clips)  # (n, frames, H, W, 3) uint8
    names = [f"{s}_{c:03d}" for s, c in zip(test.segment, test.clip, strict=True)]
    artifacts = write_reconstructions(out, names, clips, frames / 2.0, cfg.decode.samples)
    ctx.progress(1, f"{len(clips)} clips decoded")
    metrics = {
        "test_clips": float(len(clips)),
        "frames_per_second": float(clips.shape[0] * clips.shape[1] / loop),
        "unet_share": unet_s / loop,
        "vae_share": vae_s / loop,
        "decode_seconds": time.perf_counter() - started,
    }
    return StageResult(metrics=metrics, artifacts=artifacts)
