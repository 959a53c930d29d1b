"""Decoding speed of the video generator, measured side by side in one process.

1. Batched adversarial guidance (condition and negative in one UNet call per step) against two
   UNet calls per step, same seed: the outputs must agree to 1e-5 (goal: >= 1.7x on a CPU at
   the tiny profile's sizes).
2. Decode throughput (frames per second) and the share of time in the UNet, the VAE and the
   rest, at the tiny profile's sizes with random weights (speed does not depend on them).
3. With --gpu on a CUDA machine: an SD-1.5-size UNet (random weights), 6 frames at 256 x 256,
   50 DDIM steps, bf16 autocast + SDPA: seconds per clip (goal <= 1 s on an H100) and peak
   memory.

Run: python bench/generator.py [--profile tiny] [--clips 8] [--steps 25] [--gpu]. Reports;
never fails on a missed goal.
"""

from __future__ import annotations

import argparse
import time

import torch

from harness.profiles import load_profile
from mindvideo.errors import typed_section
from mindvideo.models import diffusion as D
from mindvideo.models.clip_config import ClipConfig
from mindvideo.models.inflated_unet import InflatedUNet, inflate
from mindvideo.models.pipeline import MindVideoPipeline

GOAL_RATIO = 1.7
GOAL_GPU_S = 1.0


def tiny_pipeline(profile: str, device: str) -> tuple[MindVideoPipeline, int, int, int]:
    p = load_profile(profile)
    side = p.data.synth.world.height
    text_width = typed_section(p, "eval.clip", ClipConfig).text_width
    torch.manual_seed(0)
    vae = D.build_vae(p.diffusion.vae, side).eval()
    latent = side // p.diffusion.vae.downsample
    unet = D.build_unet(p.diffusion.unet, p.diffusion.vae.latent_channels, text_width, latent)
    inflated = inflate(unet.eval(), p.generator, seed=0)
    pipe = MindVideoPipeline.with_ddim(vae, inflated, D.build_scheduler(p.diffusion).config)
    return pipe.to(device), side, p.encoder.cond_tokens, text_width


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def cpu_bench(args) -> None:
    pipe, side, tokens, width = tiny_pipeline(args.profile, "cpu")
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(args.clips, tokens, width, generator=g)
    neg = torch.randn(1, tokens, width, generator=g)
    frames = load_profile(args.profile).data.frames_per_clip

    def run(batched: bool, output_type: str = "latent"):
        return pipe(
            cond,
            neg,
            frames=frames,
            num_inference_steps=args.steps,
            guidance_scale=12.5,
            generator=torch.Generator().manual_seed(1),
            batched_guidance=batched,
            output_type=output_type,
        )

    run(True)  # warm-up
    two_s, separate = timed(lambda: run(False))
    one_s, batched = timed(lambda: run(True))
    diff = float((batched - separate).abs().max())
    ratio = two_s / one_s
    print(
        f"{args.profile}: {args.clips} clips x {frames} frames of {side} px, {args.steps} DDIM "
        f"steps, guidance 12.5, {torch.get_num_threads()} threads"
    )
    print(f"two UNet calls per step: {two_s:.2f} s")
    print(
        f"one batched call:        {one_s:.2f} s  -> {ratio:.2f}x "
        f"(goal >= {GOAL_RATIO}x: {'met' if ratio >= GOAL_RATIO else 'MISSED'}); "
        f"max |difference| {diff:.1e} ({'ok' if diff <= 1e-5 else 'ABOVE 1e-5'})"
    )
    total_s, clips = timed(lambda: run(True, "np"))
    unet_s, vae_s = pipe.timings["unet"], pipe.timings["vae"]
    n_frames = clips.shape[0] * clips.shape[1]
    print(
        f"decode: {n_frames} frames in {total_s:.2f} s = {n_frames / total_s:.1f} frames/s; "
        f"UNet {unet_s / total_s:.0%}, VAE {vae_s / total_s:.0%}, "
        f"rest {(total_s - unet_s - vae_s) / total_s:.0%}"
    )


def gpu_bench(args) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    assert torch.cuda.is_available(), "--gpu needs a CUDA device"
    device = "cuda"
    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=32)  # SD 1.5's sizes
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=256,
    )
    inflated = InflatedUNet(unet.eval(), "prev2", True).to(device, torch.bfloat16)
    vae = vae.eval().to(device, torch.bfloat16)
    config = D.build_scheduler(load_profile("paper").diffusion).config
    pipe = MindVideoPipeline.with_ddim(vae, inflated, config).to(device)
    cond = torch.randn(1, 77, 768, device=device, dtype=torch.bfloat16)

    def clip():
        return pipe(
            cond,
            None,
            frames=6,
            height=256,
            width=256,
            num_inference_steps=50,
            guidance_scale=12.5,
            generator=torch.Generator().manual_seed(0),
        )

    clip()  # warm-up (kernels, allocator)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(3):
        torch.cuda.synchronize()
        s, _ = timed(clip)
        times.append(s)
    best = min(times)
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(
        f"{torch.cuda.get_device_name()}: SD-1.5-size UNet, 6 frames at 256 px, 50 DDIM steps, "
        f"bf16 + SDPA, batched guidance: {best:.2f} s per clip (goal <= {GOAL_GPU_S:.0f} s: "
        f"{'met' if best <= GOAL_GPU_S else 'MISSED'}), peak memory {peak:.1f} GiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    if args.gpu:
        gpu_bench(args)
    else:
        cpu_bench(args)


if __name__ == "__main__":
    main()
