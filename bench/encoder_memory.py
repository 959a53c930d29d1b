"""The spatiotemporal fMRI encoder's training memory with and without activation checkpointing
(`encoder.checkpoint_activations`), side by side in one process, at the paper profile's sizes.

One training step (forward, InfoNCE-like loss on the condition, backward, AdamW) of the
encoder (embed 1024, depth 24, 16 heads, MLP ratio 1, a window of 2 frames, --voxels voxels
in patches of 16, condition 77 x 768) at two batch sizes in each mode. The memory a window
adds (the slope between the two batches: activations, which scale with the batch) and the
fixed part (weights, gradients, AdamW's two moments: counted from the weight count) give the
step's memory at the paper's contrastive batch of 64 windows. Peaks are this process's
resident memory on a CPU (float32; harness/memory.py resets the kernel's high-water mark
before each step) or torch's CUDA peak on a GPU (bf16 autocast). Both modes must give the same
gradients (checked on the first step, to 1e-5 relative) and the script prints the ratio of
their activation memory and of their step times.

    python bench/encoder_memory.py [--voxels 12000] [--batches 1 2] [--device cpu]

The ROI of MinD-Video's arrays is not published; 12,000 cortical vertices is the dry run's
assumption (bench/paper_dry_run.py), and --voxels 4500 gives a smaller visual cortex.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from harness.memory import GIB, peak_memory, resident_bytes  # noqa: E402
from mindvideo.models.encoder_config import EncoderConfig, MAEConfig  # noqa: E402
from mindvideo.models.fmri_encoder import FmriEncoder  # noqa: E402
from mindvideo.precision import autocast  # noqa: E402

PAPER_BATCH, WINDOW, CLIP_DIM = 64, 2, 768


def current_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated() / GIB
    rss = resident_bytes()
    if rss is None:
        raise RuntimeError("no VmRSS in /proc/self/status: this bench reads Linux's counters")
    return rss / GIB


def step(encoder, opt, x: torch.Tensor, device: str) -> None:
    with autocast(device):
        emb = encoder.clip_embedding(encoder.condition(x))
        logits = emb @ emb.T * 10
    loss = torch.nn.functional.cross_entropy(logits.float(), torch.arange(len(x), device=device))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=False)  # gradients stay allocated: part of the fixed memory


def measure(encoder, opt, x, device: str) -> tuple[float, float]:
    """(peak GiB above the memory held before the step, seconds) of one step."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    before = current_gib(device)
    window = peak_memory()
    start = time.perf_counter()
    step(encoder, opt, x, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = window.gib().get("cuda" if device.startswith("cuda") else "rss")
    if peak is None:
        raise RuntimeError("this machine cannot reset its memory peak (harness/memory.py)")
    return peak - before, seconds


def same_gradients(encoder, x, device: str) -> float:
    """The largest relative difference between the gradients of the two modes."""
    grads = []
    for recompute in (False, True):
        encoder.cfg = encoder.cfg.model_copy(update={"checkpoint_activations": recompute})
        encoder.zero_grad(set_to_none=True)
        with autocast(device):
            encoder.condition(x).float().square().mean().backward()
        grads.append([p.grad.clone() for p in encoder.parameters() if p.grad is not None])
    encoder.zero_grad(set_to_none=True)
    worst = 0.0
    for a, b in zip(*grads, strict=True):
        worst = max(worst, ((a - b).norm() / a.norm().clamp_min(1e-12)).item())
    return worst


def build(args):
    torch.manual_seed(0)
    mae = MAEConfig.paper()
    if args.depth:
        mae = mae.model_copy(update={"depth": args.depth})
    encoder = FmriEncoder(mae, EncoderConfig.paper(), args.voxels, WINDOW, CLIP_DIM)
    return encoder.to(args.device).train()


def child(args) -> int:
    """One mode's two steps, in a process of its own (memory the other mode freed does not
    stay in this process's heap): prints a JSON line."""
    small, large = sorted(args.batches)
    encoder = build(args)
    encoder.cfg = encoder.cfg.model_copy(update={"checkpoint_activations": args.mode == "on"})
    x = torch.randn(large, WINDOW, args.voxels, device=args.device)
    opt = torch.optim.AdamW(encoder.parameters(), lr=1e-5)
    step(encoder, opt, x[:small], args.device)  # allocates gradients and AdamW's state
    (m1, _), (m2, t2) = (measure(encoder, opt, x[:b], args.device) for b in (small, large))
    print(json.dumps({"small": m1, "large": m2, "seconds": t2}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=12_000)
    parser.add_argument("--batches", type=int, nargs=2, default=[1, 2])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--depth", type=int, default=None, help="fewer blocks (a quick check)")
    parser.add_argument("--mode", choices=["off", "on"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    small, large = sorted(args.batches)
    if small < 1 or small == large:
        parser.error("--batches: two different sizes of at least 1")
    if args.mode:
        return child(args)
    encoder = build(args)
    mae = encoder.mae_cfg
    weights = sum(p.numel() for p in encoder.parameters())
    fixed = weights * 4 * 4 / GIB  # float32 weights, gradients and AdamW's two moments
    worst = same_gradients(
        encoder, torch.randn(1, WINDOW, args.voxels, device=args.device), args.device
    )
    patches = encoder.token_mix.in_channels // WINDOW
    del encoder
    print(
        f"encoder {weights / 1e6:.1f} M weights ({mae.embed_dim} x {mae.depth}), "
        f"{args.voxels} voxels = {patches} patches x {WINDOW} frames, on {args.device}; "
        f"weights, gradients and AdamW {fixed:.2f} GiB; gradients of the two modes differ by "
        f"{worst:.1e} (relative)",
        flush=True,
    )
    rows = {}
    for mode in ("off", "on"):
        cmd = [sys.executable, __file__, "--mode", mode, "--voxels", str(args.voxels)]
        cmd += ["--batches", str(small), str(large), "--device", args.device]
        cmd += ["--depth", str(args.depth)] if args.depth else []
        # big blocks go back to the system when freed, so the peak above the held memory is
        # the step's own
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        r = json.loads(done.stdout.strip().splitlines()[-1])
        per = max(r["large"] - r["small"], 0.0) / (large - small)
        rows[mode] = (per, r["seconds"])
        at_paper = fixed + per * PAPER_BATCH + max(r["small"] - per * small, 0.0)
        print(
            f"checkpoint_activations={mode == 'on'!s:5}  step peak above the held memory: "
            f"batch {small} {r['small']:.2f} GiB, batch {large} {r['large']:.2f} GiB; per "
            f"window {per:.3f} GiB; step at batch {large} {r['seconds']:.1f} s; at the paper's "
            f"batch of {PAPER_BATCH}: about {at_paper:.0f} GiB",
            flush=True,
        )
    (off, t_off), (on, t_on) = rows["off"], rows["on"]
    if on > 0:
        print(f"activation memory per window, off / on: {off / on:.1f}x")
    print(f"step time at batch {large}, on / off: {t_on / t_off:.2f}x")
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
