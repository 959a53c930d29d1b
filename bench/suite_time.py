"""What a suite costs cold on this machine, per stage kind, and what the speed levers change.

1. Plans the suite (one seed: `--seed`) and counts its distinct stages per kind (a stage shared
   by several runs counts once, as the cache computes it once).
2. Reads the seconds each distinct stage took from the committed exports (results/*/runs: the
   `seconds.<stage>` metric of each run, per stage key, in whichever suite computed it; a
   stage key recorded nowhere takes its kind's median), and adds them up: the cold time as
   recorded.
3. Measures, side by side in this process, the two stage kinds that dominate (co-training and
   decoding) at the profile's sizes with random weights:
   - one process with 2 torch threads against two single-thread processes at once (the pool
     executor: `mvbench run --executor pool --threads 1`), as throughput;
   - decoding at the profile's DDIM steps against a multistep solver at `--solver-steps`;
   and the image diffusion model's UNet step (the SD stand-in, trained once per dataset). It
   prints the cold time estimated for this machine now (the measured kinds from unit cost x
   units, the others as recorded) and again with each lever applied to the kinds it touches.

Run: python bench/suite_time.py [--suite paper_ablations] [--profile tiny] [--seed 0]
[--solver-steps 10] [--repeats 3]. Reports; never fails on a missed goal. The thread layout
changes CPU results in their last bits (they repeat at the same thread count), the solver
changes them more: sampler_steps' table says by how much.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

GOAL_MIN = {"paper_ablations": 45.0, "quickstart": 10.0}
TRAINING = ("mbm", "mbm_finetune", "contrastive", "diffusion", "video_pretrain", "cotrain", "align")


def distinct_stages(suite: str, profile: str | None, seed: int) -> tuple[dict[str, str], int]:
    """{stage key: kind} of the suite's runs of one seed, and the number of those runs."""
    from harness.plan import build_plan, select_runs
    from harness.spec import load_spec

    plan = build_plan(load_spec(ROOT / "experiments" / "suites" / f"{suite}.yaml", profile))
    plan = select_runs(plan, seeds=[seed])
    return {key: node.name for key, node in plan.nodes.items()}, len(plan.runs)


def recorded_seconds() -> tuple[dict[str, float], dict[str, list[float]]]:
    """({stage key: seconds}, {kind: seconds of every recorded stage of it}) from all committed
    exports (results/*/runs/runs/*/run.json): a stage key names the same computation in any
    suite."""
    found: dict[str, float] = {}
    kinds: dict[str, str] = {}
    for path in sorted((ROOT / "results").glob("*/runs/runs/*/run.json")):
        run = json.loads(path.read_text())
        keys = json.loads(run["tags"].get("mvbench.stage_keys", "{}"))
        for name, key in keys.items():
            values = run["metrics"].get(f"seconds.{name}")
            if values:
                found[key], kinds[key] = float(values[-1][1]), name
    by_kind: dict[str, list[float]] = defaultdict(list)
    for key, seconds in found.items():
        by_kind[kinds[key]].append(seconds)
    return found, by_kind


def recorded_metric(name: str) -> list[float]:
    """Every committed run's last value of metric `name` (results/*/runs)."""
    values = []
    for path in sorted((ROOT / "results").glob("*/runs/runs/*/run.json")):
        found = json.loads(path.read_text())["metrics"].get(name)
        if found:
            values.append(float(found[-1][1]))
    return values


def cold_seconds(
    stages: dict[str, str], recorded: dict[str, float], medians: dict[str, list[float]]
) -> dict[str, list[float]]:
    """Seconds per distinct stage, by kind (a stage without a record: its kind's median)."""
    by_kind: dict[str, list[float]] = defaultdict(list)
    for key, kind in stages.items():
        if key in recorded:
            by_kind[kind].append(recorded[key])
        elif medians[kind]:
            by_kind[kind].append(statistics.median(medians[kind]))
        else:
            by_kind[kind].append(float("nan"))
    return by_kind


# Measurements -------------------------------------------------------------------------------


def _workload(kind: str, profile: str, steps: int, solver: str | None = None):
    """A callable doing one unit of `kind` at the profile's sizes (random weights)."""
    from generator import tiny_pipeline

    from harness.profiles import load_profile
    from mindvideo.models.pipeline import make_scheduler

    p = load_profile(profile)
    pipe, side, tokens, width = tiny_pipeline(profile, "cpu")
    frames, latent = p.data.frames_per_clip, side // p.diffusion.vae.downsample
    g = torch.Generator().manual_seed(0)
    if kind == "train":
        unet = pipe.unet.train()
        batch = p.cotrain.batch_size
        x = torch.randn(batch, p.diffusion.vae.latent_channels, frames, latent, latent, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        cond = torch.randn(batch, tokens, width, generator=g)

        def unit():
            unet.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(unet(x, t, cond), x).backward()

        return unit
    if kind == "image_unet":  # the diffusion stage's text-to-image UNet (the SD stand-in)
        from mindvideo.models import diffusion as D

        cfg = p.diffusion.unet
        unet = D.build_unet(cfg, p.diffusion.vae.latent_channels, width, latent).train()
        c = p.diffusion.vae.latent_channels
        x = torch.randn(cfg.batch_size, c, latent, latent, generator=g)
        t = torch.randint(0, 1000, (cfg.batch_size,), generator=g)
        cond = torch.randn(cfg.batch_size, tokens, width, generator=g)

        def unit():
            unet.zero_grad(set_to_none=True)
            out = unet(x, t, encoder_hidden_states=cond).sample
            torch.nn.functional.mse_loss(out, x).backward()

        return unit
    if solver:
        pipe.scheduler = make_scheduler(solver, pipe.scheduler.config)
    clips = p.decode.batch_size
    cond = torch.randn(clips, tokens, width, generator=g)
    neg = torch.randn(1, tokens, width, generator=g)

    def unit():
        with torch.no_grad():
            pipe(
                cond,
                neg,
                frames=frames,
                num_inference_steps=steps,
                guidance_scale=p.guidance.scale,
                generator=torch.Generator().manual_seed(1),
                output_type="np",
            )

    return unit


def _timed_units(kind: str, profile: str, steps: int, solver, threads: int, repeats: int, out):
    torch.set_num_threads(threads)
    unit = _workload(kind, profile, steps, solver)
    unit()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        unit()
    out.put(time.perf_counter() - start)


def throughput(kind, profile, steps, solver, threads, processes, repeats) -> float:
    """Units per second of `processes` processes with `threads` threads each, all at once."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    args = (kind, profile, steps, solver, threads, repeats, queue)
    workers = [ctx.Process(target=_timed_units, args=args) for _ in range(processes)]
    for w in workers:
        w.start()
    seconds = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    return processes * repeats / max(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="paper_ablations")
    parser.add_argument("--profile", default=None, help="the suite's own by default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--solver", default="DPMSolverMultistepScheduler")
    parser.add_argument("--solver-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    stages, n_runs = distinct_stages(args.suite, args.profile, args.seed)
    recorded, medians = recorded_seconds()
    by_kind = cold_seconds(stages, recorded, medians)
    counts = Counter(stages.values())
    missing = sum(1 for key in stages if key not in recorded)
    print(
        f"suite {args.suite}, seed {args.seed}: {n_runs} runs, {len(stages)} distinct stages "
        f"({len(stages) - missing} with recorded seconds in results/*/runs, "
        f"{missing} at their kind's median there)"
    )

    from harness.profiles import load_profile
    from harness.spec import load_spec

    spec = load_spec(ROOT / "experiments" / "suites" / f"{args.suite}.yaml", args.profile)
    profile = spec.profile
    ddim_steps = load_profile(profile).decode.steps
    print(f"measuring at {profile}'s sizes (random weights, {args.repeats} units each) ...")
    train_2t = throughput("train", profile, 0, None, 2, 1, args.repeats)
    train_pool = throughput("train", profile, 0, None, 1, 2, args.repeats)
    decode_2t = throughput("decode", profile, ddim_steps, None, 2, 1, args.repeats)
    decode_pool = throughput("decode", profile, ddim_steps, None, 1, 2, args.repeats)
    solver_2t = throughput("decode", profile, args.solver_steps, args.solver, 2, 1, args.repeats)
    image_2t = throughput("image_unet", profile, 0, None, 2, 1, args.repeats)
    pool_train, pool_decode = train_pool / train_2t, decode_pool / decode_2t
    solver = solver_2t / decode_2t
    print(
        f"co-training step: {1 / train_2t:.3f} s at 2 threads; two single-thread processes "
        f"{pool_train:.2f}x the throughput"
    )
    print(
        f"decoding a batch, DDIM {ddim_steps} steps: {1 / decode_2t:.2f} s at 2 threads; two "
        f"single-thread processes {pool_decode:.2f}x; {args.solver} at {args.solver_steps} "
        f"steps {solver:.2f}x"
    )

    # This machine now, uncontended: the dominant kinds from their measured unit cost times
    # their units (the records' clip counts), the others as recorded.
    p = load_profile(profile)
    train_clips = statistics.median(recorded_metric("cotrain.train_clips") or [float("nan")])
    test_clips = statistics.median(recorded_metric("decode.test_clips") or [float("nan")])
    cotrain_steps = p.cotrain.epochs * (train_clips // p.cotrain.batch_size)
    decode_batches = math.ceil(test_clips / p.decode.batch_size)
    now_unit = {
        "cotrain": cotrain_steps / train_2t,
        "decode": decode_batches / decode_2t,
        # its UNet steps only (the VAE's 800 small steps add a few minutes)
        "diffusion": p.diffusion.unet.steps / image_2t,
    }
    print(
        f"a co-training: {cotrain_steps:.0f} steps = {now_unit['cotrain']:.0f} s of UNet steps "
        f"now (recorded median {statistics.median(by_kind.get('cotrain', [math.nan])):.0f} s); "
        f"a decode: {decode_batches} batches = {now_unit['decode']:.0f} s now (recorded median "
        f"{statistics.median(by_kind.get('decode', [math.nan])):.0f} s); the image UNet's "
        f"{p.diffusion.unet.steps} steps: {now_unit['diffusion'] / 60:.1f} min now (recorded "
        f"{statistics.median(by_kind.get('diffusion', [math.nan])) / 60:.1f} min with its VAE)"
    )

    def pool(kind: str) -> float:  # a kind with one stage cannot be split over processes
        if counts[kind] < 2:
            return 1.0
        return pool_decode if kind in ("decode", "evaluate", "baselines") else pool_train

    rows = []
    for kind in sorted(by_kind, key=lambda k: -sum(by_kind[k])):
        recorded_s = sum(by_kind[kind])
        now = now_unit[kind] * counts[kind] if kind in now_unit else recorded_s
        pooled = now / pool(kind)
        both = pooled / (solver if kind == "decode" else 1.0)
        rows.append((kind, counts[kind], recorded_s, now, pooled, both))
    width = max(len(r[0]) for r in rows)
    print(
        f"\n{'stage kind':<{width}}  count  recorded  now (est.)  pool 2x1 thread  "
        f"+ {args.solver_steps}-step solver   (minutes)"
    )
    for kind, count, *minutes in rows:
        cells = "  ".join(f"{m / 60:{w}.1f}" for m, w in zip(minutes, (8, 10, 15, 17), strict=True))
        print(f"{kind:<{width}}  {count:5d}  {cells}")
    total = [sum(r[i] for r in rows) / 60 for i in (2, 3, 4, 5)]
    cells = "  ".join(f"{m:{w}.1f}" for m, w in zip(total, (8, 10, 15, 17), strict=True))
    print(f"{'total':<{width}}         {cells}")
    goal = GOAL_MIN.get(args.suite)
    if goal:
        verdict = "met" if total[3] <= goal else "NOT met"
        print(f"goal: cold in <= {goal:.0f} min on 2 cores: {verdict} ({total[3]:.0f} min)")
    training = sum(r[5] for r in rows if r[0] in TRAINING) / 60
    print(f"(training stages: {training:.0f} of those {total[3]:.0f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
