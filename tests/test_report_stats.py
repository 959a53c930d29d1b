"""Paired significance against the reference: known differences, pairing by clip name, seeds
averaged per sample, determinism, and the table's marks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.report.stats import NAMES_KEY, paired_tests, subject_differences, wilcoxon_p
from harness.report.tables import write_tables

N = 60


def scores(values, names=None) -> dict[str, np.ndarray]:
    out = {"ssim": np.asarray(values, float)}
    if names is not None:
        out[NAMES_KEY] = np.array(names)
    return out


def runs_of(per) -> pd.DataFrame:
    """The runs frame of per-sample scores: one model run each, its mean SSIM."""
    rows = [
        {
            "variant": v,
            "base": v,
            "kind": "model",
            "subject": sub,
            "seed": seed,
            "ssim": float(s["ssim"].mean()),
        }
        for (v, sub, seed), s in per.items()
    ]
    return pd.DataFrame(rows)


def names(n: int = N) -> list[str]:
    return [f"test0_{i:03d}" for i in range(n)]


def test_a_constant_improvement_is_found_with_a_tight_ci():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.2, 0.4, N)
    per = {("ref", "s1", 0): scores(ref), ("better", "s1", 0): scores(ref + 0.1)}
    t = paired_tests(per, "ref", ["ssim"], n_boot=500)
    row = t[(t.variant == "better") & (t.subject == "s1")].iloc[0]
    assert row.delta == pytest.approx(0.1)
    assert row.ci_low == pytest.approx(0.1) and row.ci_high == pytest.approx(0.1)
    assert row.p_value < 1e-6 and row.n == N and row.pairs == 1


def test_noise_is_not_significant_and_its_ci_covers_zero():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 1, N)
    per = {("ref", "s1", 0): scores(ref), ("same", "s1", 0): scores(ref + rng.normal(0, 0.1, N))}
    row = paired_tests(per, "ref", ["ssim"], n_boot=1000).iloc[0]
    assert row.p_value > 0.05 and row.ci_low < 0 < row.ci_high


def test_runs_pair_by_clip_name_not_position():
    ref = np.linspace(0, 1, N)
    order = np.random.default_rng(2).permutation(N)
    shuffled_names = [names()[i] for i in order]
    per = {
        ("ref", "s1", 0): scores(ref, names()),
        # the same scores plus 0.05, stored in another order with their names
        ("v", "s1", 0): scores(ref[order] + 0.05, shuffled_names),
    }
    d, seeds = subject_differences(per, "v", "ref", "s1", "ssim")
    np.testing.assert_allclose(d, 0.05)
    assert seeds == 1
    # without names, position pairing would see noise
    per_no_names = {("ref", "s1", 0): scores(ref), ("v", "s1", 0): scores(ref[order] + 0.05)}
    d2, _ = subject_differences(per_no_names, "v", "ref", "s1", "ssim")
    assert np.abs(d2 - 0.05).max() > 0.1


def test_seeds_are_averaged_per_sample_and_subjects_within_the_average():
    per = {}
    for seed, shift in ((0, 0.1), (1, 0.3)):
        per[("ref", "s1", seed)] = scores(np.zeros(N))
        per[("v", "s1", seed)] = scores(np.full(N, shift))
    per[("ref", "s2", 0)] = scores(np.zeros(N))
    per[("v", "s2", 0)] = scores(np.full(N, -0.2))
    per[("v", "s2", 1)] = scores(np.full(N, 5.0))  # the reference has no seed 1: not paired
    t = paired_tests(per, "ref", ["ssim"], n_boot=200).set_index("subject")
    assert t.loc["s1", "delta"] == pytest.approx(0.2) and t.loc["s1", "pairs"] == 2
    assert t.loc["s2", "delta"] == pytest.approx(-0.2) and t.loc["s2", "pairs"] == 1
    assert t.loc["average", "delta"] == pytest.approx(0.0) and t.loc["average", "n"] == 2 * N


def test_same_seed_same_ci_and_a_different_seed_moves_it():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0, 1, N)
    per = {("ref", "s1", 0): scores(ref), ("v", "s1", 0): scores(ref + rng.normal(0.02, 0.1, N))}
    a = paired_tests(per, "ref", ["ssim"], n_boot=300, seed=0)
    b = paired_tests(per, "ref", ["ssim"], n_boot=300, seed=0)
    c = paired_tests(per, "ref", ["ssim"], n_boot=300, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert a.ci_low.iloc[0] != c.ci_low.iloc[0]


def test_degenerate_cases():
    assert wilcoxon_p(np.zeros(10)) == 1.0
    assert np.isnan(wilcoxon_p(np.array([])))
    # different sample counts without names cannot be paired: no row
    per = {("ref", "s1", 0): scores(np.zeros(5)), ("v", "s1", 0): scores(np.zeros(6))}
    assert paired_tests(per, "ref", ["ssim"]).empty
    # a metric one run lacks: no row either
    per = {("ref", "s1", 0): scores(np.zeros(5)), ("v", "s1", 0): {"psnr": np.zeros(5)}}
    assert paired_tests(per, "ref", ["ssim"]).empty


def test_table_marks_significant_deltas_only(tmp_path):
    rng = np.random.default_rng(4)
    ref = rng.uniform(0.2, 0.4, N)
    per = {
        ("full", "s1", 0): scores(ref),
        ("better", "s1", 0): scores(ref + 0.1),
        ("noisy", "s1", 0): scores(ref + rng.normal(0, 0.1, N)),
    }
    runs = runs_of(per)
    tests = paired_tests(per, "full", ["ssim"], n_boot=500)
    write_tables(runs, ["ssim"], tmp_path, "full", formats=("md", "csv"), tests=tests)
    md = (tmp_path / "table.md").read_text()
    better = next(line for line in md.splitlines() if line.startswith("| better"))
    noisy = next(line for line in md.splitlines() if line.startswith("| noisy"))
    assert better.rstrip(" |").endswith("*") and not noisy.rstrip(" |").endswith("*")
    assert "Paired differences from the reference full" in md and "Wilcoxon" in md
    csv = pd.read_csv(tmp_path / "table.csv")
    avg = csv[(csv.table == "average") & (csv.variant == "better")].iloc[0]
    assert avg.p_value < 1e-6 and avg.delta_ci_low == pytest.approx(0.1)
    assert np.isnan(csv[(csv.table == "average") & (csv.variant == "full")].p_value.iloc[0])


def test_a_mark_needs_the_wilcoxon_test_and_the_paired_ci_to_agree(tmp_path):
    # most samples a little better, a few much worse: the signed-rank test rejects, but the
    # mean difference is about -0.008 with a CI that spans 0, so no mark
    d = np.r_[np.full(55, 0.01), np.full(5, -0.2)]
    ref = np.full(N, 0.5)
    per = {("full", "s1", 0): scores(ref), ("mixed", "s1", 0): scores(ref + d)}
    tests = paired_tests(per, "full", ["ssim"], n_boot=2000)
    row = tests[tests.subject == "average"].iloc[0]
    assert row.p_value < 0.05 and row.ci_low < 0 < row.ci_high
    runs = runs_of(per)
    write_tables(runs, ["ssim"], tmp_path, "full", formats=("md",), tests=tests)
    line = next(
        x for x in (tmp_path / "table.md").read_text().splitlines() if x.startswith("| mixed")
    )
    assert not line.rstrip(" |").endswith("*")
