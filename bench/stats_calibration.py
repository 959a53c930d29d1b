"""Calibration of the report's paired statistics, side by side on the same simulated tables.

For each design (harness/report/calibration.py: the SynthCC test set's structure, with seed
offsets as measured in the committed tables, none, and twice as large) it draws `--tables`
tables with no true difference and as many with one of `--delta`, and prints for each method
the CI's coverage of the true difference, the false-positive rate of a single test at 0.05 and
the power, each with its Monte Carlo standard error. Goals for the block method: coverage
93-97%, false positives <= 5% (+ MC error). Usage: python bench/stats_calibration.py
[--tables 400] [--delta 0.02] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.report.calibration import (  # noqa: E402
    Design,
    block_sign_flip,
    calibrate,
    two_way_bootstrap,
)

DESIGNS = {
    "measured seed effects": Design(),
    "no seed effects": Design(sd_seed=0.0, sd_run=0.0),
    "seed effects x2": Design(sd_seed=0.02, sd_run=0.02),
}
METHODS = {
    "block (default)": dict(method="block"),
    "clip (Wilcoxon, independent clips)": dict(method="clip"),
    "block sign-flip (no CI)": dict(method="flip", tester=block_sign_flip),
    "seeds x scenes percentile bootstrap": dict(method="two-way", tester=two_way_bootstrap),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=400)
    parser.add_argument("--delta", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{args.tables} tables per cell, true difference {args.delta} (and 0 for the FPR)")
    header = f"{'design':24s} {'method':36s} {'coverage':>15s} {'false pos.':>15s} {'power':>7s}"
    print(header)
    for design_name, design in DESIGNS.items():
        for method_name, kwargs in METHODS.items():
            start = time.perf_counter()
            c = calibrate(
                tables=args.tables, delta=args.delta, design=design, seed=args.seed, **kwargs
            )
            coverage = (
                "-"
                if kwargs["method"] == "flip"
                else (f"{c.coverage:.3f} ± {c.mc_error(c.coverage):.3f}")
            )
            print(
                f"{design_name:24s} {method_name:36s} {coverage:>15s} "
                f"{c.false_positives:.3f} ± {c.mc_error(c.false_positives):.3f} {c.power:7.3f}"
                f"   ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
