"""`mvbench data inspect` on a release-shaped CC2017 folder at the release's sizes: time and
peak memory (issue 29, item 2).

Writes (once; a second call reuses it) subject1 at full length: 18 training segments seen twice
and 5 test segments seen ten times, 240 volumes of 91,282 grayordinates each (59,412 cortical
vertices on the 32k fs_LR meshes), 86 runs, 7.5 GB of float32 CIFTI. Subjects 2..N are the
release's file lists as hard links to subject1's runs (same sizes and reads, no extra disk).
The data: a fifth of the cortical vertices respond to a per-segment stimulus signal 2 TRs
later (the same in every viewing of a segment), the rest is noise, every run on a slow drift;
stimuli/<segment>.npy frames (32 px, 3 fps) whose brightness follows the signal, so the
encoding-lag estimate has a true lag of 2 TRs to find.

Then runs `mvbench data inspect ROOT --profile paper` in a child process and prints its wall
time, the child's peak resident memory (ru_maxrss) and the summary.

    python bench/real_size_inspect.py [--root /tmp/mvbench-real-size] [--subjects 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mindvideo.data.cifti import SurfaceModel, brain_axis, write_dtseries

LEFT, RIGHT, MESH, GRAYORDINATES = 29696, 29716, 32492, 91282
TRAIN, TEST = [(f"seg{k}", 2) for k in range(1, 19)], [(f"test{k}", 10) for k in range(1, 6)]
N_TR, TR, LAG, FEATURES, FPS, SIDE = 240, 2.0, 2, 8, 3, 32


def release_axis(rng: np.random.Generator):
    """91,282 grayordinates: two cortical surfaces (medial wall out) and subcortical voxels."""
    surfaces = [
        SurfaceModel(name, MESH, np.sort(rng.choice(MESH, n, replace=False)))
        for name, n in (("CORTEX_LEFT", LEFT), ("CORTEX_RIGHT", RIGHT))
    ]
    return brain_axis(surfaces, n_subcortical=GRAYORDINATES - LEFT - RIGHT)


def write_release(root: Path, subjects: int, seed: int = 0) -> tuple[int, float]:
    """The folder (module docstring); returns (files written, seconds)."""
    rng = np.random.default_rng(seed)
    axis = release_axis(rng)
    n_cortical = LEFT + RIGHT
    driven = rng.random(n_cortical) < 0.2
    weights = (rng.standard_normal((FEATURES, int(driven.sum()))) * 0.25).astype(np.float32)
    written, start = 0, time.perf_counter()
    stimuli = root / "stimuli"
    stimuli.mkdir(parents=True, exist_ok=True)
    (stimuli / "stimuli.json").write_text(json.dumps({"fps": FPS, "frames_per_tr": 6}) + "\n")
    drift = np.linspace(-1.0, 1.0, N_TR, dtype=np.float32)[:, None]
    for i, (seg, repeats) in enumerate(TRAIN + TEST):  # draws per segment and run: resumable
        signal = np.random.default_rng([seed, i]).standard_normal((N_TR, FEATURES), np.float32)
        frames = stimuli / f"{seg}.npy"
        if not frames.exists():
            level = (255 / (1 + np.exp(-signal[:, 0]))).astype(np.uint8)
            video = np.repeat(level, 6)[:, None, None, None] * np.ones((1, SIDE, SIDE, 3), np.uint8)
            np.save(frames, video)
        response = signal @ weights  # the stimulus at TR t shows at t + LAG
        response = np.concatenate([np.zeros((LAG, response.shape[1]), np.float32), response])
        for r in range(1, repeats + 1):
            path = root / "subject1" / "fmri" / seg / "cifti" / f"{seg}_{r}_Atlas.dtseries.nii"
            if path.exists():
                continue
            run_rng = np.random.default_rng([seed, i, r])
            data = run_rng.standard_normal((N_TR, GRAYORDINATES), dtype=np.float32)
            data[:, np.flatnonzero(driven)] += response[:N_TR]
            data += 3.0 * drift * run_rng.standard_normal((1, GRAYORDINATES), dtype=np.float32)
            write_dtseries(path, 100.0 + data, TR, axis)
            written += 1
    for k in range(2, subjects + 1):
        for path in sorted((root / "subject1" / "fmri").glob("*/cifti/*.dtseries.nii")):
            link = root / f"subject{k}" / path.relative_to(root / "subject1")
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, link)
    return written, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/mvbench-real-size"))
    parser.add_argument("--subjects", type=int, default=3)
    args = parser.parse_args()
    written, seconds = write_release(args.root, args.subjects)
    runs = sorted((args.root / "subject1" / "fmri").glob("*/cifti/*.dtseries.nii"))
    size = sum(p.stat().st_size for p in runs)
    print(
        f"{args.root}: subject1 {len(runs)} runs, {size / 1e9:.2f} GB "
        f"({written} written in {seconds:.0f} s); subjects 2-{args.subjects} hard links"
    )
    command = ["mvbench", "data", "inspect", str(args.root), "--profile", "paper", "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    print(done.stdout, end="")
    if done.returncode:
        print(done.stderr, file=sys.stderr)
        return done.returncode
    print(
        f"inspect: {wall:.0f} s wall for {args.subjects} subject(s) "
        f"({wall / args.subjects:.0f} s each), peak resident memory {peak:.2f} GiB "
        f"({os.cpu_count()} cores)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
