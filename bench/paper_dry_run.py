"""The `paper` profile's dry run on CPU (issue 29, item 3): every stage at its paper sizes with
random weights, one or two optimisation steps each, on a short release-shaped folder; per-stage
wall time and peak resident memory.

Writes (once; a second call reuses what is there) under --root:
- video_fmri_dataset/subject1: two training segments seen twice and one test segment seen
  twice, --trs volumes each, of 91,282 grayordinates in the HCP order (59,412 cortical), the
  ROI's vertices driven by a per-segment signal 2 TRs later; stimuli at 256 x 256 px, 3 fps,
  with a caption per TR;
- an HCP-style corpus for MBM (--corpus-subjects subjects, one resting run of --corpus-trs
  volumes each) and a visual-ROI mask of --roi cortical vertices (a CIFTI dscalar);
- models with random weights at the released sizes: a Stable Diffusion 1.5 diffusers folder
  (UNet 860 M weights, its autoencoder, SD 1.5's scheduler), an open_clip ViT-L-14 state dict,
  ViT-base/16 (224 px, 1,000 classes) and VideoMAE-base (16 frames, 400 classes) judges.

Then `mvbench run` of a one-run suite on the paper profile (in this process), with only the
counts cut (one epoch each; the batch sizes below, which a CPU's memory allows; 2 DDIM steps;
retrieval among 2), and prints a table from the stage cache: each stage's time, peak resident
memory (harness/memory.py) and what it processed, and the time per unit scaled to the paper's
counts on this CPU. The models' and the data's sizes are the paper's; the batch sizes are not:
the memory the encoder's training adds per window, which sets its memory at the paper's batch,
is measured side by side with and without recomputation by bench/encoder_memory.py.

    python bench/paper_dry_run.py [--root /tmp/mvbench-paper-dry] [--trs 12]

`--scale toy` writes and runs the same at toy sizes (the slow test's setting, seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mindvideo.data.cifti import SurfaceModel, brain_axis, write_dscalar, write_dtseries
from mindvideo.models.sd15_files import SD15_INDEX, SD15_SCHEDULER, SD15_UNET, SD15_VAE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_size_inspect import release_axis  # noqa: E402

TR, LAG, FRAMES_PER_TR, SEED = 2.0, 2, 6, 0
TRAIN, TEST = (("seg1", 2), ("seg2", 2)), (("test1", 2),)
CAPTIONS = ("a dog runs across a field", "a car drives on a road", "waves break on a beach")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

TOY_TRANSFORMER = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


@dataclass(frozen=True)
class Scale:
    """What the folder and the models hold, and the suite's counts."""

    name: str
    side: int  # stimulus frames, px
    roi: int  # cortical vertices of the ROI
    unet: dict
    vae: dict
    clip_model: str  # an open_clip name; toy: registered from clip_arch
    clip_arch: dict | None
    judge: dict  # ViT / VideoMAE config fields beyond the defaults (base size)
    video_frames: int
    overrides: dict = field(default_factory=dict)


PAPER = Scale(
    name="paper",
    side=256,
    roi=12_000,
    unet=SD15_UNET,
    vae=SD15_VAE,
    clip_model="ViT-L-14",
    clip_arch=None,
    judge={},
    video_frames=16,
    overrides={
        "mbm.epochs": 1,
        "mbm.warmup_epochs": 0,
        "mbm.batch_size": 8,
        "mbm.holdout_subjects": 1,
        "contrastive.epochs": 1,
        "contrastive.batch_size": 8,
        "contrastive.retrieval_n": 2,  # the few test windows of a short folder
        "cotrain.epochs": 1,
        "cotrain.batch_size": 1,
        "cotrain.warmup_steps": 1,
        "cotrain.val_clips": 2,
        "decode.steps": 2,
        "decode.batch_size": 1,
        "decode.samples": 1,
        "eval.samples": 1,
    },
)
TOY = Scale(
    name="toy",
    side=32,
    roi=64,
    unet={
        "sample_size": 4,
        "block_out_channels": [8, 16],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 1,
        "cross_attention_dim": 768,
        "attention_head_dim": 4,
        "norm_num_groups": 4,
    },
    # SD 1.5's four levels (factor 8), narrow
    vae=SD15_VAE
    | {
        "block_out_channels": [8] * 4,
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "sample_size": 32,
    },
    clip_model="mvbench-dry-toy",
    clip_arch={
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "patch_size": 8,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    },
    judge={"image_size": 32, **TOY_TRANSFORMER},
    video_frames=4,
    overrides={
        **PAPER.overrides,
        "mbm.model.embed_dim": 32,
        "mbm.model.depth": 1,
        "mbm.model.num_heads": 2,
        "mbm.model.decoder_embed_dim": 16,
        "mbm.model.decoder_depth": 1,
        "mbm.model.decoder_num_heads": 2,
    },
)
SCALES = {"paper": PAPER, "toy": TOY}


def toy_axis():
    surfaces = [SurfaceModel(n, 90, np.arange(80)) for n in ("CORTEX_LEFT", "CORTEX_RIGHT")]
    return brain_axis(surfaces, n_subcortical=8)


def write_data(root: Path, scale: Scale, n_tr: int, corpus_subjects: int, corpus_trs: int):
    """The CC2017 folder, the corpus and the ROI mask (module docstring); skips what exists."""
    axis = release_axis(np.random.default_rng(SEED)) if scale.name == "paper" else toy_axis()
    n_all = len(axis)
    n_cortical = int(np.count_nonzero(axis.surface_mask))
    rng = np.random.default_rng([SEED, 1])
    roi = np.zeros(n_all, np.float32)
    roi[np.sort(rng.choice(n_cortical, scale.roi, replace=False))] = 1
    mask = root / "visual_roi.dscalar.nii"
    if not mask.exists():
        write_dscalar(mask, roi, axis, "visual")
    driven = np.flatnonzero(roi)
    cc = root / "video_fmri_dataset"
    stimuli = cc / "stimuli"
    stimuli.mkdir(parents=True, exist_ok=True)
    for i, (seg, repeats) in enumerate((*TRAIN, *TEST)):
        seg_rng = np.random.default_rng([SEED, 2, i])
        signal = seg_rng.standard_normal(n_tr + LAG).astype(np.float32)
        if not (stimuli / f"{seg}.npy").exists():
            level = (255 / (1 + np.exp(-signal[:n_tr]))).astype(np.uint8)
            frames = np.repeat(level, FRAMES_PER_TR)[:, None, None, None]
            noise = seg_rng.integers(0, 40, (n_tr * FRAMES_PER_TR, scale.side, scale.side, 3))
            np.save(stimuli / f"{seg}.npy", np.clip(frames + noise, 0, 255).astype(np.uint8))
            captions = [CAPTIONS[(t // 3 + i) % len(CAPTIONS)] for t in range(n_tr)]
            (stimuli / f"{seg}_clips.csv").write_text("caption\n" + "\n".join(captions) + "\n")
        for r in range(1, repeats + 1):
            path = cc / "subject1" / "fmri" / seg / "cifti" / f"{seg}_{r}_Atlas.dtseries.nii"
            if path.exists():
                continue
            data = np.random.default_rng([SEED, 3, i, r]).standard_normal((n_tr, n_all), "f4")
            data[:, driven] += 2.0 * signal[:n_tr, None]  # shown at t, seen at t + LAG
            data[LAG:, driven] += 2.0 * signal[: n_tr - LAG, None]
            write_dtseries(path, 100.0 + data, TR, axis)
    corpus = root / "hcp"
    for s in range(corpus_subjects):
        run = "rfMRI_REST1_LR"
        path = corpus / f"{100307 + s}" / "MNINonLinear" / "Results" / run
        path = path / f"{run}_Atlas_MSMAll.dtseries.nii"
        if not path.exists():
            data = np.random.default_rng([SEED, 4, s]).standard_normal((corpus_trs, n_all), "f4")
            write_dtseries(path, 100.0 + data, TR, axis)
    return cc, corpus, mask


def write_models(root: Path, scale: Scale) -> dict[str, str]:
    """Random-weight models at the scale's sizes, in the formats the paper profile reads;
    returns the profile's variables for them. Skips a model whose folder or file exists."""
    import open_clip
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        VideoMAEConfig,
        VideoMAEForVideoClassification,
        ViTConfig,
        ViTForImageClassification,
    )

    torch.manual_seed(SEED)
    sd = root / "stable-diffusion-v1-5"
    if not (sd / "model_index.json").exists():
        AutoencoderKL(**scale.vae).save_pretrained(sd / "vae")
        UNet2DConditionModel(**scale.unet).save_pretrained(sd / "unet")
        (sd / "scheduler").mkdir(parents=True, exist_ok=True)
        (sd / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER))
        (sd / "model_index.json").write_text(json.dumps(SD15_INDEX))
    if scale.clip_arch is not None:
        arch = root / "clip-arch"
        arch.mkdir(exist_ok=True)
        (arch / f"{scale.clip_model}.json").write_text(json.dumps(scale.clip_arch))
        open_clip.add_model_config(arch)
    clip = root / "open_clip_pytorch_model.bin"
    if not clip.exists():
        torch.save(open_clip.create_model(scale.clip_model).state_dict(), clip)
    frame_judge, video_judge = root / "vit-base-patch16-224", root / "videomae-base-kinetics"
    pre = {"image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "do_normalize": True}
    if not (frame_judge / "config.json").exists():
        vit = ViTConfig(num_labels=1000, **scale.judge)
        ViTForImageClassification(vit).save_pretrained(frame_judge)
        (frame_judge / "preprocessor_config.json").write_text(json.dumps(pre))
    if not (video_judge / "config.json").exists():
        mae = VideoMAEConfig(num_labels=400, num_frames=scale.video_frames, **scale.judge)
        VideoMAEForVideoClassification(mae).save_pretrained(video_judge)
        (video_judge / "preprocessor_config.json").write_text(json.dumps(pre))
    return {
        "MINDVIDEO_SD15": str(sd),
        "MINDVIDEO_CLIP_CHECKPOINT": str(clip),
        "MINDVIDEO_CLIP_MODEL": scale.clip_model,
        "MINDVIDEO_FRAME_JUDGE": str(frame_judge),
        "MINDVIDEO_VIDEO_JUDGE": str(video_judge),
    }


def suite_text(scale: Scale) -> str:
    overrides = "\n".join(f"  {k}: {v}" for k, v in scale.overrides.items())
    return (
        "suite: paper-dry-run\n"
        "profile: paper\n"
        "description: every stage of the paper profile at its sizes, one epoch each\n"
        "seeds: [0]\nsubjects: [subject1]\nvariants: {full: {}}\nreference: full\n"
        f"overrides:\n{overrides}\n"
    )


# What each stage processed (its metric) and how many of those the paper's run processes: the
# paper's 4,320 training and 1,200 test samples, the profile's epochs and DDIM steps.
TRAIN_SAMPLES, TEST_SAMPLES = 4320, 1200


def paper_units() -> dict[str, tuple[str, str, float | None]]:
    """stage -> (unit, how it is counted here, how many the paper's run processes)."""
    from harness.profiles import load_profile

    p = load_profile("paper")
    return {
        "mbm": ("corpus volume-epoch", "train_volumes", None),  # the corpus is the user's
        "contrastive": ("window-epoch", "train_windows", p.contrastive.epochs * TRAIN_SAMPLES),
        "cotrain": ("clip-epoch", "train_clips", p.cotrain.epochs * TRAIN_SAMPLES),
        "decode": ("clip x DDIM step", "test_clips*steps", p.decode.steps * TEST_SAMPLES),
        "evaluate": ("test clip", "n_samples", TEST_SAMPLES),
    }


def processed(manifest: dict, how: str) -> float | None:
    metrics = manifest.get("metrics", {})
    if how == "test_clips*steps":
        steps = (manifest.get("config") or {}).get("decode", {}).get("steps")
        return metrics.get("test_clips", 0) * steps if steps else None
    return metrics.get(how)


def stage_table(store: Path) -> list[dict]:
    """One row per cached stage, in the order they ran."""
    units = paper_units()
    rows = []
    for path in (store / "cache").glob("*/*/manifest.json"):
        m = json.loads(path.read_text())
        unit, how, paper = units.get(m["stage"], (None, None, None))
        done = processed(m, how) if how else None
        seconds = float(m.get("seconds", 0.0))
        rows.append(
            {
                "stage": m["stage"],
                "seconds": seconds,
                "rss": m.get("peak_gib", {}).get("rss"),
                "created": m.get("created", ""),
                "weights": m.get("metrics", {}).get("trainable_parameters"),
                "unit": unit,
                "processed": done,
                "per_unit": seconds / done if done else None,
                "paper_hours": seconds / done * paper / 3600 if done and paper else None,
            }
        )
    return sorted(rows, key=lambda r: r["created"])


def print_table(rows: list[dict]) -> None:
    print(
        "| stage | time (s) | peak resident memory (GiB) | trainable weights | processed | "
        "s per unit | paper's count on this CPU (h) |"
    )
    print("|---|---:|---:|---:|---|---:|---:|")
    for r in rows:
        rss = "-" if r["rss"] is None else f"{r['rss']:.2f}"
        weights = "-" if r["weights"] is None else f"{r['weights'] / 1e6:.1f} M"
        done = "-" if r["processed"] is None else f"{r['processed']:.0f} {r['unit']}s"
        per = "-" if r["per_unit"] is None else f"{r['per_unit']:.2f}"
        hours = "-" if r["paper_hours"] is None else f"{r['paper_hours']:,.0f}"
        print(
            f"| {r['stage']} | {r['seconds']:.0f} | {rss} | {weights} | {done} | {per} | {hours} |"
        )


# One GPU: the SD-1.5-size inflated UNet decoded a 6-frame 256 px clip with 50 DDIM steps and
# batched guidance in 3.17 s on one H200 (bf16, SDPA; bench/generator.py --gpu, 2026-11-26).
H200_DECODE_S, H200_DECODE_STEPS = 3.17, 50
ASSUMED_TRAIN_TFLOPS = 200.0  # an assumption, not a measurement: see flops_table


def paper_flops() -> dict[str, float]:
    """TFLOP per unit of each GPU stage at the paper profile's sizes, counted by torch's
    FlopCounterMode on the meta device (nothing is computed): a contrastive window (the
    encoder forward and backward, plus the forward again where encoder.checkpoint_activations
    recomputes it), a co-training clip (that, and the inflated UNet over the clip's frames,
    forward and backward with the profile's trainable layers), and a decoding clip x step (the
    UNet over the frames for the condition and the negative)."""
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from harness.profiles import load_profile
    from mindvideo.models.encoder_config import EncoderConfig
    from mindvideo.models.fmri_encoder import FmriEncoder
    from mindvideo.models.inflated_unet import inflate
    from mindvideo.train.video_diffusion import trainable_unet_parameters

    p = load_profile("paper")
    frames, window = p.data.frames_per_clip, p.data.window
    enc_cfg = EncoderConfig(**p.encoder.model_dump(exclude={"voxels"}))
    counts = {}
    with torch.device("meta"):
        encoder = FmriEncoder(p.mbm.model, enc_cfg, PAPER.roi, window, 768)
        x = torch.randn(1, window, PAPER.roi)
        with FlopCounterMode(display=False) as fc:
            cond = encoder.condition(x)
            cond.sum().backward()
        counts["contrastive"] = fc.get_total_flops()
        unet = inflate(UNet2DConditionModel(**SD15_UNET), p.generator, SEED)
        unet.requires_grad_(False)
        for w in trainable_unet_parameters(unet, p.cotrain.train_unet):
            w.requires_grad_(True)
        side = PAPER.side // 8
        z = torch.randn(1, 4, frames, side, side)
        with FlopCounterMode(display=False) as fc:
            unet(z, torch.zeros(1, dtype=torch.long), encoder.condition(x)).sum().backward()
        counts["cotrain"] = fc.get_total_flops()  # the encoder's share included
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            unet(z.repeat(2, 1, 1, 1, 1), torch.zeros(2), torch.randn(2, 77, 768))
        counts["decode"] = fc.get_total_flops()
    return {k: v / 1e12 for k, v in counts.items()}


def flops_table(per_unit: dict[str, float]) -> None:
    """GPU hours of each stage at the paper's counts: at the rate one H200 decoded at (measured)
    and at ASSUMED_TRAIN_TFLOPS (about a fifth of an H100's or H200's dense bf16 peak)."""
    units = paper_units()
    rate = per_unit["decode"] * H200_DECODE_STEPS / H200_DECODE_S  # TFLOP/s
    print(
        f"\nFLOPs counted on the meta device; GPU hours at the paper's counts, at the H200's "
        f"measured decoding rate ({rate:.0f} TFLOP/s: {H200_DECODE_S} s per clip at "
        f"{H200_DECODE_STEPS} steps) and at an assumed {ASSUMED_TRAIN_TFLOPS:.0f} TFLOP/s\n"
    )
    print("| stage | unit | TFLOP per unit | units (paper) | GPU h at measured rate | at assumed |")
    print("|---|---|---:|---:|---:|---:|")
    for stage, tflop in per_unit.items():
        unit, _, count = units[stage]
        total = tflop * count
        print(
            f"| {stage} | {unit} | {tflop:.2f} | {count:,.0f} | {total / rate / 3600:,.1f} | "
            f"{total / ASSUMED_TRAIN_TFLOPS / 3600:,.1f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/mvbench-paper-dry"))
    parser.add_argument("--scale", choices=sorted(SCALES), default="paper")
    parser.add_argument("--trs", type=int, default=12, help="volumes per run (release: 240)")
    parser.add_argument("--corpus-subjects", type=int, default=3)
    parser.add_argument("--corpus-trs", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--prepare-only", action="store_true", help="write, do not run")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="another count"
    )
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    for item in args.set:
        key, _, value = item.partition("=")
        scale = replace(scale, overrides={**scale.overrides, key: value})
    root = args.root
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cc, corpus, mask = write_data(root, scale, args.trs, args.corpus_subjects, args.corpus_trs)
    os.environ.update(
        {
            **write_models(root, scale),
            "MINDVIDEO_CC2017_ROOT": str(cc),
            "MINDVIDEO_CORPUS_ROOT": str(corpus),
            "MINDVIDEO_CORPUS_MASK": str(mask),
        }
    )
    print(f"{root}: data and models ready in {time.perf_counter() - start:.0f} s", flush=True)
    spec = root / "paper_dry_run.yaml"
    spec.write_text(suite_text(scale))
    if args.prepare_only:
        return 0
    store = root / "store"
    from harness.cli import main as mvbench

    start = time.perf_counter()  # in this process: each stage's peak is its own (memory.py)
    code = mvbench(
        ["run", str(spec), "--store", str(store), "--threads", str(args.threads), "--quiet"]
    )
    wall = time.perf_counter() - start
    rows = stage_table(store)
    print(
        f"\n`mvbench run` on the paper profile: {wall:.0f} s wall, exit {code}, "
        f"{args.threads} torch threads, {os.cpu_count()} cores\n"
    )
    print_table(rows)
    if scale.name == "paper":
        flops_table(paper_flops())
    return code


if __name__ == "__main__":
    sys.exit(main())
