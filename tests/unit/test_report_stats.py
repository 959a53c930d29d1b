"""Paired significance against the reference: the block method (stimulus blocks, seeds as a
random effect, Holm), its calibration on simulated tables, its errors, and the per-clip method
(known differences, pairing by clip name, seeds averaged per sample, determinism, marks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.report.calibration import calibrate
from harness.report.stats import (
    BLOCKS_KEY,
    NAMES_KEY,
    contiguous_blocks,
    holm,
    paired_tests,
    subject_differences,
    wilcoxon_p,
)
from harness.report.tables import write_tables
from mindvideo.errors import ConfigError

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
    t = paired_tests(per, "ref", ["ssim"], method="clip", n_boot=500)
    row = t[(t.variant == "better") & (t.subject == "s1")].iloc[0]
    assert row.delta == pytest.approx(0.1)
    assert row.ci_low == pytest.approx(0.1) and row.ci_high == pytest.approx(0.1)
    assert row.p_value < 1e-6 and row.n == N and row.pairs == 1


def test_noise_is_not_significant_and_its_ci_covers_zero():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 1, N)
    per = {("ref", "s1", 0): scores(ref), ("same", "s1", 0): scores(ref + rng.normal(0, 0.1, N))}
    row = paired_tests(per, "ref", ["ssim"], method="clip", n_boot=1000).iloc[0]
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
    t = paired_tests(per, "ref", ["ssim"], method="clip", n_boot=200).set_index("subject")
    assert t.loc["s1", "delta"] == pytest.approx(0.2) and t.loc["s1", "pairs"] == 2
    assert t.loc["s2", "delta"] == pytest.approx(-0.2) and t.loc["s2", "pairs"] == 1
    assert t.loc["average", "delta"] == pytest.approx(0.0) and t.loc["average", "n"] == 2 * N


def test_same_seed_same_ci_and_a_different_seed_moves_it():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0, 1, N)
    per = {("ref", "s1", 0): scores(ref), ("v", "s1", 0): scores(ref + rng.normal(0.02, 0.1, N))}
    a = paired_tests(per, "ref", ["ssim"], method="clip", n_boot=300, seed=0)
    b = paired_tests(per, "ref", ["ssim"], method="clip", n_boot=300, seed=0)
    c = paired_tests(per, "ref", ["ssim"], method="clip", n_boot=300, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert a.ci_low.iloc[0] != c.ci_low.iloc[0]


def test_degenerate_cases():
    assert wilcoxon_p(np.zeros(10)) == 1.0
    assert np.isnan(wilcoxon_p(np.array([])))
    # different sample counts without names cannot be paired: no row
    per = {("ref", "s1", 0): scores(np.zeros(5)), ("v", "s1", 0): scores(np.zeros(6))}
    assert paired_tests(per, "ref", ["ssim"], method="clip").empty
    # a metric one run lacks: no row either
    per = {("ref", "s1", 0): scores(np.zeros(5)), ("v", "s1", 0): {"psnr": np.zeros(5)}}
    assert paired_tests(per, "ref", ["ssim"], method="clip").empty


def test_table_marks_significant_deltas_only(tmp_path):
    rng = np.random.default_rng(4)
    ref = rng.uniform(0.2, 0.4, N)
    per = {
        ("full", "s1", 0): scores(ref),
        ("better", "s1", 0): scores(ref + 0.1),
        ("noisy", "s1", 0): scores(ref + rng.normal(0, 0.1, N)),
    }
    runs = runs_of(per)
    tests = paired_tests(per, "full", ["ssim"], method="clip", n_boot=500)
    write_tables(runs, ["ssim"], tmp_path, "full", formats=("md", "csv"), tests=tests)
    md = (tmp_path / "table.md").read_text()
    better = next(line for line in md.splitlines() if line.startswith("| better"))
    noisy = next(line for line in md.splitlines() if line.startswith("| noisy"))
    assert better.rstrip(" |").endswith("*") and not noisy.rstrip(" |").endswith("*")
    assert "Paired differences from the reference full" in md and "Wilcoxon" in md
    assert "assume independent clips" in md
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
    tests = paired_tests(per, "full", ["ssim"], method="clip", n_boot=2000)
    row = tests[tests.subject == "average"].iloc[0]
    assert row.p_value < 0.05 and row.ci_low < 0 < row.ci_high
    runs = runs_of(per)
    write_tables(runs, ["ssim"], tmp_path, "full", formats=("md",), tests=tests)
    line = next(
        x for x in (tmp_path / "table.md").read_text().splitlines() if x.startswith("| mixed")
    )
    assert not line.rstrip(" |").endswith("*")


# --- the block method -------------------------------------------------------------------------

SCENES = [f"test0/{i // 4}" for i in range(N)]  # 15 scenes of 4 clips


def block_scores(values, names_=None, scenes=None) -> dict[str, np.ndarray]:
    out = scores(values, names_ or names())
    out[BLOCKS_KEY] = np.array(scenes or SCENES)
    return out


def test_block_method_finds_a_constant_improvement_exactly():
    ref = np.random.default_rng(5).uniform(0.2, 0.4, N)
    per = {("ref", "s1", 0): block_scores(ref), ("better", "s1", 0): block_scores(ref + 0.1)}
    row = paired_tests(per, "ref", ["ssim"], n_boot=300).iloc[0]
    assert row.delta == pytest.approx(0.1) and row.ci_low == pytest.approx(0.1)
    assert row.p_value < 1e-10 and row.blocks == 15


def test_scene_level_noise_widens_the_ci_beyond_the_per_clip_one():
    # the variant differs from the reference by a scene effect shared by the scene's clips:
    # 15 independent values, not 60
    rng = np.random.default_rng(6)
    scene_effect = np.repeat(rng.normal(0, 0.1, 15), 4)
    per = {
        ("ref", "s1", 0): block_scores(np.zeros(N)),
        ("v", "s1", 0): block_scores(scene_effect + rng.normal(0, 0.01, N)),
    }
    block = paired_tests(per, "ref", ["ssim"], n_boot=2000).iloc[0]
    clip = paired_tests(per, "ref", ["ssim"], n_boot=2000, method="clip").iloc[0]
    assert block.delta == pytest.approx(clip.delta)
    ratio = (block.ci_high - block.ci_low) / (clip.ci_high - clip.ci_low)
    assert 1.5 < ratio < 2.6  # about sqrt(4) = 2: four clips per scene carry one value


def test_seeds_that_disagree_leave_a_difference_unproven():
    # the example: per-seed deltas -0.031, -0.001, -0.011 with little clip noise; each
    # clip is significant on its own, the seeds are not
    rng = np.random.default_rng(7)
    per = {}
    for seed, shift in enumerate((-0.031, -0.001, -0.011)):
        per[("ref", "s1", seed)] = block_scores(np.zeros(N))
        per[("v", "s1", seed)] = block_scores(shift + rng.normal(0, 0.002, N))
    block = paired_tests(per, "ref", ["ssim"], n_boot=500).iloc[0]
    clip = paired_tests(per, "ref", ["ssim"], n_boot=500, method="clip").iloc[0]
    assert clip.p_value < 1e-6 and clip.ci_high < 0
    assert block.p_value > 0.05 and block.ci_low < 0 < block.ci_high
    assert block.df == pytest.approx(2, abs=0.1)  # the seeds' term dominates: 3 seeds, 2 df


def test_subjects_share_blocks_and_the_average_resamples_them_jointly():
    # two subjects whose scene effects are the same (they watch the same stimuli) and cancel
    # nothing: the average's CI is as wide as one subject's, not sqrt(2) narrower
    rng = np.random.default_rng(8)
    effect = np.repeat(rng.normal(0, 0.1, 15), 4)
    per = {}
    for subject in ("s1", "s2"):
        per[("ref", subject, 0)] = block_scores(np.zeros(N))
        per[("v", subject, 0)] = block_scores(effect)
    t = paired_tests(per, "ref", ["ssim"], n_boot=2000).set_index("subject")
    one = t.loc["s1", "ci_high"] - t.loc["s1", "ci_low"]
    both = t.loc["average", "ci_high"] - t.loc["average", "ci_low"]
    assert both == pytest.approx(one, rel=0.15) and t.loc["average", "blocks"] == 15


def test_without_scenes_blocks_are_consecutive_clips_of_a_segment():
    assert contiguous_blocks(["test1_000", "test1_004", "test1_005", "test2_001"], 5) == [
        "test1#0",
        "test1#0",
        "test1#1",
        "test2#0",
    ]
    per = {
        ("ref", "s1", 0): scores(np.zeros(N), names()),
        ("v", "s1", 0): scores(np.ones(N), names()),
    }
    t = paired_tests(per, "ref", ["ssim"], n_boot=200, block_clips=5)
    assert t.attrs["blocking"] == "blocks of 5 consecutive clips" and t.iloc[0].blocks == 12


def test_holm_adjusts_step_down_and_keeps_nan():
    adjusted = holm([0.01, 0.04, np.nan, 0.03])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, np.nan, 0.06])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]


def test_the_correction_runs_over_each_table_and_raw_p_is_kept():
    rng = np.random.default_rng(9)
    ref = rng.uniform(0, 1, N)
    per = {("ref", "s1", 0): block_scores(ref)}
    for i in range(4):
        per[(f"v{i}", "s1", 0)] = block_scores(ref + rng.normal(0.02, 0.05, N))
    holm_t = paired_tests(per, "ref", ["ssim"], n_boot=300)
    none_t = paired_tests(per, "ref", ["ssim"], n_boot=300, correction="none")
    for t in (holm_t, none_t):
        assert set(t.subject) == {"s1", "average"}
    s1 = holm_t[holm_t.subject == "s1"]
    np.testing.assert_allclose(s1.p_adjusted, holm(s1.p_value))
    assert (holm_t.p_adjusted >= holm_t.p_value).all() and (
        holm_t.p_adjusted > holm_t.p_value
    ).any()
    np.testing.assert_allclose(none_t.p_adjusted, none_t.p_value)


def test_runs_without_names_or_scenes_get_errors_that_name_them():
    per = {("ref", "s1", 0): scores(np.zeros(5)), ("v", "s1", 2): scores(np.zeros(5))}
    with pytest.raises(ConfigError, match=r"v / s1 / seed 2.*method: clip"):
        paired_tests(per, "ref", ["ssim"])
    per = {
        ("ref", "s1", 0): block_scores(np.zeros(N)),
        ("v", "s1", 0): scores(np.zeros(N), names()),
    }
    with pytest.raises(ConfigError, match=r"no scene labels \(v / s1 / seed 0"):
        paired_tests(per, "ref", ["ssim"], blocks="scene")
    other = [f"test0/{i // 3}" for i in range(N)]
    per = {
        ("ref", "s1", 0): block_scores(np.zeros(N)),
        ("v", "s1", 0): block_scores(np.zeros(N), scenes=other),
    }
    with pytest.raises(ConfigError, match="different data"):
        paired_tests(per, "ref", ["ssim"])


@pytest.mark.slow  # 400 simulated tables: ~10 s (bench/stats_calibration.py prints both)
def test_the_block_method_is_calibrated_and_the_per_clip_method_is_not():
    # simulated tables with the test set's design (harness/report/calibration.py); 400 with no
    # difference and 400 with one of 0.02: bench/stats_calibration.py prints more
    block = calibrate("block", tables=400, n_boot=500, seed=0)
    assert 0.93 <= block.coverage <= 0.97
    assert block.false_positives <= 0.05 + 2 * block.mc_error(0.05)
    clip = calibrate("clip", tables=100, n_boot=500, seed=0)
    assert clip.coverage < 0.85 and clip.false_positives > 0.15  # anti-conservative


def test_the_table_names_the_split_chance_and_the_correction(tmp_path):
    rng = np.random.default_rng(10)
    ref = rng.uniform(0.2, 0.4, N)
    per = {("full", "s1", 0): block_scores(ref), ("better", "s1", 0): block_scores(ref + 0.1)}
    runs = runs_of(per).assign(video_2way_top1=0.8, video_2way_top1_strict=0.6)
    tests = paired_tests(per, "full", ["ssim"], n_boot=300)
    write_tables(
        runs,
        ["video_2way_top1", "video_2way_top1_strict", "ssim"],
        tmp_path,
        "full",
        formats=("md", "tex", "csv"),
        tests=tests,
        split="val",
    )
    md = (tmp_path / "table.md").read_text()
    assert "Scored on the val split" in md and "Holm-corrected" in md and "scenes" in md
    assert "Video 2-way chance 0.750 (3/(N+2))" in md
    assert "Video 2-way (strict) chance 0.500 (1/N)" in md
    tex = (tmp_path / "table.tex").read_text()
    assert "Scored on the val split" in tex and "3/(N+2)" in tex
    csv = pd.read_csv(tmp_path / "table.csv")
    assert {"p_value", "p_adjusted", "blocks", "df"} <= set(csv.columns)
    assert "with one seed the seeds' variance cannot be estimated" in md  # one seed here
    per[("full", "s1", 1)] = per[("full", "s1", 0)]
    per[("better", "s1", 1)] = block_scores(ref + 0.12)
    tests = paired_tests(per, "full", ["ssim"], n_boot=300)
    write_tables(runs_of(per), ["ssim"], tmp_path, "full", formats=("md",), tests=tests)
    assert "with one seed" not in (tmp_path / "table.md").read_text()


def test_a_report_refuses_runs_scored_on_different_splits():
    from types import SimpleNamespace as NS

    from harness.report.build import report_split

    def run(key, variant, split):
        profile = NS(eval=NS(split=split))
        return NS(key=key, label=f"{variant} / subject1 / seed 0", profile=profile)

    runs = [run("a", "full", "test"), run("b", "tuned", "val"), run("c", "late", "val")]
    plan = NS(suite="mixed", runs=runs)
    with pytest.raises(
        ConfigError,
        match=r"different splits \(test: full / subject1 / seed 0; "
        r"val: tuned / subject1 / seed 0, late",
    ):
        report_split(plan, NS(run_ids={"a": 1, "b": 2, "c": 3}))
    # a run that has not finished does not count
    assert report_split(plan, NS(run_ids={"b": 2, "c": 3})) == "val"


def test_pairs_compare_each_row_with_its_own_reference(tmp_path):
    """reference: {variant: its reference}: a contrast at each level of a design (here mbm
    vs scratch at two data fractions). Each row's delta, paired test and mark are against its
    own reference; the references and unpaired rows have none; the table names the pairs."""
    from harness.report.reference import Reference

    base = np.random.default_rng(7).uniform(0.2, 0.4, N)
    gain = {"mbm-low": 0.1, "scratch-low": 0.0, "mbm-high": 0.3, "scratch-high": 0.3, "x": 0.5}
    per = {(v, "s1", 0): block_scores(base + g) for v, g in gain.items()}
    pairs = Reference.of({"mbm-low": "scratch-low", "mbm-high": "scratch-high"})
    t = paired_tests(per, pairs, ["ssim"], n_boot=300)
    assert set(t.variant) == {"mbm-low", "mbm-high"}
    delta = t[t.subject == "s1"].set_index("variant")["delta"]
    assert delta["mbm-low"] == pytest.approx(0.1) and delta["mbm-high"] == pytest.approx(0.0)
    write_tables(runs_of(per), ["ssim"], tmp_path, pairs, formats=("md", "csv"), tests=t)
    md = (tmp_path / "table.md").read_text()
    assert "difference of the mean from each row's reference" in md
    assert "| mbm-low (vs scratch-low) | 0.398 (+0.100)* |" in md
    assert "| mbm-high (vs scratch-high) | 0.598 (+0.000) |" in md
    assert "| scratch-low (ref.) | 0.298 |" in md and "| x | **0.798** |" in md
    assert "## Paired differences from each row's reference" in md
    assert "| mbm-low (vs scratch-low) | +0.100 [0.100, 0.100] p<0.001* |" in md
    csv = pd.read_csv(tmp_path / "table.csv")
    assert csv.loc[csv.variant == "x", "delta"].isna().all()
