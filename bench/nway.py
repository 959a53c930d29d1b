"""Times vectorised N-way top-K against the per-trial loop on the frame-level CC2017 workload.

Run: python bench/nway.py. Reports; never fails on a missed goal.
"""

from __future__ import annotations

import time

import numpy as np

from mindvideo.eval.metrics import n_way_top_k

SAMPLES, FRAMES, CLASSES, TRIALS, N_WAY, TOP_K = 1200, 6, 1000, 100, 50, 1
LOOP_ROWS = 100  # the loop is timed on this many rows and scaled to the full workload
REPEATS = 3
GOAL_VECTORISED_S = 2.0
GOAL_RATIO = 20.0


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    rows = SAMPLES * FRAMES
    pred = softmax(rng.normal(0, 2, (rows, CLASSES)))  # (rows, classes)
    gt = softmax(rng.normal(0, 2, (rows, CLASSES)))
    args = dict(n_way=N_WAY, top_k=TOP_K, trials=TRIALS, gt_top=3, seed=0)

    vectorised_s = best_time(lambda: n_way_top_k(pred, gt, **args), REPEATS)
    loop_subset_s = best_time(
        lambda: n_way_top_k(pred[:LOOP_ROWS], gt[:LOOP_ROWS], **args, method="loop"), REPEATS
    )
    loop_s = loop_subset_s / LOOP_ROWS * rows
    ratio = loop_s / vectorised_s

    print(
        f"workload: {SAMPLES} samples x {FRAMES} frames = {rows} rows, {CLASSES} classes, "
        f"{TRIALS} trials, {N_WAY}-way top-{TOP_K}, best of {REPEATS}"
    )
    fast_ok = "met" if vectorised_s <= GOAL_VECTORISED_S else "MISSED"
    print(
        f"vectorised n_way_top_k: {vectorised_s:.3f} s"
        f"  (goal <= {GOAL_VECTORISED_S:.0f} s: {fast_ok})"
    )
    print(
        f"loop (method='loop'):   {loop_s:.1f} s  "
        f"(measured {loop_subset_s:.3f} s on {LOOP_ROWS} rows, scaled to {rows})"
    )
    print(
        f"speed ratio: {ratio:.0f}x"
        f"  (goal >= {GOAL_RATIO:.0f}x: {'met' if ratio >= GOAL_RATIO else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
