"""The report writers: summary tables (known values), table files, figures and sample sheets."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.report.figures import write_figures
from harness.report.samples import (
    BLOCK_GAP,
    NAME_HEIGHT,
    SEPARATOR,
    TRUTH_LABEL,
    contact_sheet,
    label_width,
    write_gifs,
)
from harness.report.tables import summarise_runs, write_tables
from mindvideo.errors import ConfigError
from mindvideo.eval.registry import metric_info

METRICS = ["video_2way_top1", "epe", "psnr"]
# (variant, subject) -> video_2way_top1 of seeds 0, 1, 2. The reference `ridge` comes first in
# the frame, but is a baseline, so the tables list it after the model `full`.
VIDEO = {
    ("ridge", "subject1"): [0.5, 0.5, 0.5],
    ("ridge", "subject2"): [0.4, 0.6, 0.5],
    ("full", "subject1"): [0.6, 0.7, 0.8],
    ("full", "subject2"): [0.5, 0.6, 0.7],
}
# EPE (lower is better) is constant over seeds; ridge wins subject1, full subject2 and the average.
EPE = {
    ("ridge", "subject1"): 1.0,
    ("ridge", "subject2"): 5.0,
    ("full", "subject1"): 2.0,
    ("full", "subject2"): 3.0,
}


def make_runs() -> pd.DataFrame:
    rows = []
    for (variant, subject), scores in VIDEO.items():
        for seed, score in enumerate(scores):
            rows.append(
                {
                    "variant": variant,
                    "base": variant,
                    "kind": "baseline" if variant == "ridge" else "model",
                    "subject": subject,
                    "seed": seed,
                    "video_2way_top1": score,
                    "video_2way_top1_se": 0.01,
                    "video_2way_top1_ci_low": score - 0.05,
                    "video_2way_top1_ci_high": score + 0.05,
                    "epe": EPE[(variant, subject)],
                    "psnr": 20.0 + seed + (variant == "full"),
                }
            )
    return pd.DataFrame(rows)


def one(frame: pd.DataFrame, **where: str) -> pd.Series:
    mask = np.ones(len(frame), dtype=bool)
    for column, value in where.items():
        mask &= frame[column].to_numpy() == value
    assert mask.sum() == 1, where
    return frame[mask].iloc[0]


def test_metric_direction_and_labels():
    def higher(m):
        return metric_info(m).higher_is_better

    def label(m):
        return metric_info(m).label

    assert higher("video_2way_top1") and higher("ssim")
    assert higher("epe") is False
    assert higher("flow_epe") is False
    assert higher("val_loss") is False
    assert label("video_2way_top1") == "Video 2-way"
    assert label("frame_50way_top1") == "Frame 50-way"
    assert label("video_50way_top5_strict") == "Video 50-way top-5 (strict)"
    assert label("retrieval50_image_top1") == "Retrieval 50-way (image)"
    assert (label("ssim"), label("psnr")) == ("SSIM", "PSNR")
    assert metric_info("motion_direction").ranked
    assert not metric_info("evaluate.motion_speed").ranked


def test_a_speed_is_not_ranked(tmp_path):
    """The speed of motion is compared with the stimulus's: no arrow, no best."""
    runs = make_runs().assign(motion_speed=lambda r: 1.0 + (r["variant"] == "full"))
    table = summarise_runs(runs, ["motion_speed", "psnr"], reference="ridge")["average"]
    assert not table.loc[table["metric"] == "motion_speed", "best"].any()
    assert table.loc[table["metric"] == "psnr", "best"].any()
    (path,) = write_tables(runs, ["motion_speed", "psnr"], tmp_path, "ridge", formats=("md",))
    rows = [line for line in path.read_text().splitlines() if line.startswith("| full")]
    assert "| Mean flow (px/frame) | PSNR ↑ |" in path.read_text()
    assert rows[0].split("|")[2].strip().startswith("2.0")  # speed: not bold though highest
    # the stimulus's speed is context: no delta (the speeds compared, not the stimuli)
    runs = runs.assign(motion_speed_truth=lambda r: 0.8 + 0.1 * r["seed"])
    table = summarise_runs(runs, ["motion_speed", "motion_speed_truth"], reference="ridge")
    average = table["average"].set_index(["variant", "metric"])
    assert average.loc[("full", "motion_speed"), "delta"] == pytest.approx(1.0)
    assert math.isnan(average.loc[("full", "motion_speed_truth"), "delta"])


def test_summary_per_subject_known_values():
    table = summarise_runs(make_runs(), METRICS, reference="ridge")["subject"]
    assert len(table) == 2 * 2 * 3
    assert list(pd.unique(table["variant"])) == ["ridge", "full"]  # order of first appearance
    full1 = one(table, variant="full", subject="subject1", metric="video_2way_top1")
    assert full1["mean"] == pytest.approx(0.7)
    assert full1["std"] == pytest.approx(0.1)
    assert full1["n_seeds"] == 3
    assert full1["delta"] == pytest.approx(0.2)
    assert full1["ci_low"] == pytest.approx(0.65) and full1["ci_high"] == pytest.approx(0.75)
    assert bool(full1["best"])
    ridge1 = one(table, variant="ridge", subject="subject1", metric="video_2way_top1")
    assert ridge1["std"] == pytest.approx(0.0)
    assert math.isnan(ridge1["delta"])  # the reference has no delta
    assert not bool(ridge1["best"])
    # EPE: lower is better, so the best flips between subjects.
    assert bool(one(table, variant="ridge", subject="subject1", metric="epe")["best"])
    assert not bool(one(table, variant="full", subject="subject1", metric="epe")["best"])
    full2_epe = one(table, variant="full", subject="subject2", metric="epe")
    assert bool(full2_epe["best"])
    assert full2_epe["delta"] == pytest.approx(-2.0)


def test_summary_average_known_values():
    table = summarise_runs(make_runs(), METRICS, reference="ridge")["average"]
    assert len(table) == 2 * 3
    assert "subject" not in table.columns
    full = one(table, variant="full", metric="video_2way_top1")
    # Per seed, the mean over subjects: 0.55, 0.65, 0.75.
    assert full["mean"] == pytest.approx(0.65)
    assert full["std"] == pytest.approx(0.1)
    assert full["delta"] == pytest.approx(0.15)
    assert full["subjects"] == 2
    ridge = one(table, variant="ridge", metric="video_2way_top1")
    assert ridge["mean"] == pytest.approx(0.5)
    assert ridge["std"] == pytest.approx(0.05)  # seeds 0.45, 0.55, 0.5
    assert ridge["ci_low"] == pytest.approx(0.45)
    assert math.isnan(one(table, variant="full", metric="psnr")["ci_low"])  # no CI logged
    full_epe = one(table, variant="full", metric="epe")
    assert full_epe["mean"] == pytest.approx(2.5) and full_epe["delta"] == pytest.approx(-0.5)
    assert bool(full_epe["best"]) and not bool(one(table, variant="ridge", metric="epe")["best"])


def test_summary_without_reference_has_no_delta():
    tables = summarise_runs(make_runs(), METRICS, reference=None)
    assert tables["average"]["delta"].isna().all()
    assert tables["subject"]["delta"].isna().all()


def test_missing_subject_and_nan_metric():
    runs = make_runs()
    runs = runs[~((runs["variant"] == "full") & (runs["subject"] == "subject2"))].copy()
    runs.loc[runs["variant"] == "ridge", "psnr"] = np.nan
    average = summarise_runs(runs, METRICS, reference="ridge")["average"]
    full = one(average, variant="full", metric="video_2way_top1")
    assert full["subjects"] == 1
    assert full["mean"] == pytest.approx(0.7)  # subject1 only
    ridge_psnr = one(average, variant="ridge", metric="psnr")
    assert math.isnan(ridge_psnr["mean"]) and ridge_psnr["n_seeds"] == 0
    assert bool(one(average, variant="full", metric="psnr")["best"])


def test_unknown_metric_names_it_and_lists_the_available_ones():
    with pytest.raises(ConfigError, match="clip_score") as info:
        summarise_runs(make_runs(), ["ssim", "clip_score", "epe"], reference=None)
    message = str(info.value)
    assert "ssim" in message.split("have the metrics")[0]
    assert "video_2way_top1, epe, psnr" in message
    assert "video_2way_top1_se" not in message


def test_unknown_reference_is_a_config_error():
    with pytest.raises(ConfigError, match="no-such-variant"):
        summarise_runs(make_runs(), METRICS, reference="no-such-variant")


def test_markdown_table(tmp_path):
    paths = write_tables(make_runs(), METRICS, tmp_path, reference="ridge", formats=("md",))
    assert paths == [tmp_path / "table.md"]
    md = paths[0].read_text(encoding="utf-8")
    assert "## Average over subjects (mean ± std over 3 seeds)" in md
    assert "| Variant | Video 2-way ↑ | EPE ↓ | PSNR ↑ |" in md
    full = "| full | **0.650 ± 0.100** (+0.150) | **2.500 ± 0.000** (−0.500) |"
    assert full + " **22.00 ± 1.00** (+1.00) |" in md
    assert "| ridge (ref.) | 0.500 ± 0.050 | 3.000 ± 0.000 | 21.00 ± 1.00 |" in md
    average = md.split("## Per subject")[0]
    assert average.index("| full |") < average.index("| ridge (ref.) |")  # models first
    assert "### subject1" in md and "### subject2" in md
    assert "| ridge (ref.) | 0.500 ± 0.000 | **1.000 ± 0.000** | 21.00 ± 1.00 |" in md
    assert "## 95% bootstrap CIs" in md
    assert "| full | [0.600, 0.700] | – | – |" in md
    assert "reference ridge" in md and "bootstrap CI over test samples" in md


def test_markdown_single_seed_and_missing_subject(tmp_path):
    runs = make_runs()
    runs = runs[(runs["seed"] == 0)]
    runs = runs[~((runs["variant"] == "full") & (runs["subject"] == "subject2"))]
    runs = runs.drop(columns=["video_2way_top1_ci_low", "video_2way_top1_ci_high"])
    write_tables(runs, METRICS, tmp_path, reference=None, formats=("md",), group_by=("average",))
    md = (tmp_path / "table.md").read_text(encoding="utf-8")
    assert "over 1 seed)" in md
    assert "| full† | **0.600** |" in md  # one seed: no ±; one of two subjects: †
    assert "±" not in md.split("| Variant |")[1]
    assert "## Per subject" not in md and "bootstrap CIs" not in md and "(ref.)" not in md


def test_a_metric_of_small_values_keeps_two_significant_digits(tmp_path):
    runs = make_runs()
    runs["epe"] = runs["epe"] * 1e-5  # 1e-5 .. 5e-5: 3 decimals would show 0.000
    write_tables(runs, METRICS, tmp_path, reference="ridge", formats=("md",))
    md = (tmp_path / "table.md").read_text(encoding="utf-8")
    assert "| full | **0.650 ± 0.100** (+0.150) | **0.000025 ± 0.000000** (−0.000005) |" in md
    assert "| ridge (ref.) | 0.500 ± 0.050 | 0.000030 ± 0.000000 | 21.00 ± 1.00 |" in md


def test_latex_table(tmp_path):
    runs = make_runs()
    runs["variant"] = runs["variant"].replace({"full": "full_model"})
    (path,) = write_tables(
        runs, METRICS, tmp_path, reference="ridge", formats=("tex",), title="Ablation 50% & co"
    )
    tex = path.read_text(encoding="utf-8")
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 2
    assert tex.count(r"\toprule") == 2 and tex.count(r"\bottomrule") == 2
    assert r"full\_model & \textbf{0.650 $\pm$ 0.100} (+0.150)" in tex
    assert "($-$0.500)" in tex
    assert r"Ablation 50\% \& co" in tex
    assert r"\multicolumn{4}{l}{\textit{subject1}}" in tex
    bare = re.sub(r"\\[_%&#]", "", tex).replace(" & ", " ")  # escaped, or a column separator
    assert not re.search(r"[_%&#]", bare)
    # Baselines after a \midrule below the models.
    average = tex.split(r"\end{table}")[0]
    assert (
        average.index("full\\_model &")
        < average.rindex(r"\midrule")
        < average.index("ridge (ref.) &")
    )


def test_csv_round_trips(tmp_path):
    runs = make_runs()
    runs["param:data.window"] = 2
    (path,) = write_tables(runs, METRICS, tmp_path, reference="ridge", formats=("csv",))
    back = pd.read_csv(path)
    summary = summarise_runs(runs, METRICS, reference="ridge")
    assert list(back.columns[:6]) == ["table", "variant", "base", "kind", "subject", "metric"]
    assert "param:data.window" in back.columns
    assert (back["table"] == "average").sum() == len(summary["average"])
    assert (back["table"] == "subject").sum() == len(summary["subject"])
    sub = back[back["table"] == "subject"].reset_index(drop=True)
    np.testing.assert_array_equal(sub["mean"].to_numpy(), summary["subject"]["mean"].to_numpy())
    np.testing.assert_array_equal(sub["best"].to_numpy(), summary["subject"]["best"].to_numpy())


def test_bad_format_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="html"):
        write_tables(make_runs(), METRICS, tmp_path, reference=None, formats=("md", "html"))


def grid_runs() -> pd.DataFrame:
    rows = []
    cells = [
        ("ridge", "ridge", "baseline", np.nan),
        ("random-train-clip", "random-train-clip", "baseline", np.nan),
    ]
    cells += [(f"full[data.window={w}]", "full", "model", w) for w in (1, 2, 3)]
    for variant, base, kind, window in cells:
        for subject in ("subject1", "subject2"):
            for seed in (0, 1):
                rows.append(
                    {
                        "variant": variant,
                        "base": base,
                        "kind": kind,
                        "subject": subject,
                        "seed": seed,
                        "param:data.window": window,
                        "param:model.name": "unet",
                        "ssim": 0.1 * seed + (0 if np.isnan(window) else 0.05 * window),
                        "psnr": np.nan,
                    }
                )
    return pd.DataFrame(rows)


def is_png(path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures(tmp_path):
    paths = write_figures(grid_runs(), ["ssim", "psnr"], tmp_path, reference="ridge")
    # psnr has no values: no bar figure; the string parameter gets no line figure; two
    # subjects: per-subject bars; no semantic metric: no trade-off figure.
    assert [p.name for p in paths] == ["bars_ssim.png", "subjects_ssim.png", "line_data_window.png"]
    assert all(is_png(p) for p in paths)


def test_tradeoff_figure_needs_semantic_and_pixel_metrics(tmp_path):
    runs = grid_runs().assign(frame_2way_top1=lambda f: 0.5 + 0.1 * f["param:data.window"])
    paths = write_figures(runs, ["frame_2way_top1", "ssim"], tmp_path)
    names = [p.name for p in paths]
    assert "tradeoff_data_window.png" in names and is_png(tmp_path / "tradeoff_data_window.png")
    single = runs[runs["subject"] == "subject1"]
    names = [p.name for p in write_figures(single, ["ssim"], tmp_path / "b")]
    assert "tradeoff_data_window.png" not in names and "subjects_ssim.png" not in names


def test_figures_are_reproducible(tmp_path):
    runs = make_runs()
    first = write_figures(runs, METRICS, tmp_path / "a")
    np.random.seed(123)  # noqa: NPY002  (global state must not matter)
    second = write_figures(runs, METRICS, tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_figures_single_seed_single_variant(tmp_path):
    runs = make_runs()
    runs = runs[(runs["variant"] == "full") & (runs["seed"] == 0)]
    paths = write_figures(runs, METRICS, tmp_path)
    assert [p.name for p in paths] == [
        f"{kind}_{m}.png"
        for m in ("video_2way_top1", "epe", "psnr")
        for kind in ("bars", "subjects")
    ]
    assert all(is_png(p) for p in paths)


def test_contact_sheet_size(tmp_path):
    rng = np.random.default_rng(0)
    k, f, h, w, scale = 2, 3, 8, 10, 3
    truth = rng.integers(0, 256, (k, f, h, w, 3), dtype=np.uint8)
    rows = {
        "full": rng.integers(0, 256, (k, f, 4, 5, 3), dtype=np.uint8),  # smaller: resized up
        "ridge": truth.copy(),
    }
    path = contact_sheet(truth, rows, tmp_path / "sheet.png", names=["a", "b"], scale=scale)
    image = np.asarray(Image.open(path).convert("RGB"))
    left = label_width([TRUTH_LABEL, "full", "ridge"])
    block = NAME_HEIGHT + 3 * h * scale + 4 * SEPARATOR
    assert image.shape == (
        k * block + (k - 1) * BLOCK_GAP,
        left + f * (w * scale + SEPARATOR) + SEPARATOR,
        3,
    )
    # First sample, first frame of the ground truth, pixel-enlarged by `scale`.
    y0, x0 = NAME_HEIGHT + SEPARATOR, left + SEPARATOR
    tile = image[y0 : y0 + h * scale, x0 : x0 + w * scale]
    np.testing.assert_array_equal(tile[::scale, ::scale], truth[0, 0])
    # The separator column between the first two frames is white.
    assert (image[y0 : y0 + h * scale, x0 + w * scale] == 255).all()


def test_contact_sheet_shape_mismatch(tmp_path):
    truth = np.zeros((2, 3, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="full"):
        contact_sheet(truth, {"full": np.zeros((1, 3, 8, 8, 3), np.uint8)}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="frames"):
        contact_sheet(truth, {"full": np.zeros((2, 4, 8, 8, 3), np.uint8)}, tmp_path / "b.png")


def test_write_gifs(tmp_path):
    clips = np.zeros((2, 3, 8, 8, 3), dtype=np.uint8)
    paths = write_gifs(clips, ["a", "b"], tmp_path / "gifs", fps=3.0)
    assert paths == [tmp_path / "gifs" / "a.gif", tmp_path / "gifs" / "b.gif"]
    assert all(p.read_bytes()[:3] == b"GIF" for p in paths)


def test_negative_means_use_the_tables_minus_sign(tmp_path):
    runs = make_runs().assign(motion_direction=lambda r: np.where(r["variant"] == "full", -0.2, 0))
    (md,) = write_tables(runs, ["motion_direction"], tmp_path, None, ("md",), ("average",))
    (tex,) = write_tables(runs, ["motion_direction"], tmp_path, None, ("tex",), ("average",))
    assert "| full | −0.200 ± 0.000 |" in md.read_text()
    assert "$-$0.200" in tex.read_text() and "-0.000" not in md.read_text()


def test_the_stimulus_speed_is_a_line_in_the_speed_figure_not_a_figure(tmp_path):
    from harness.report.figures import _figure, _stimulus_line

    runs = grid_runs().assign(
        motion_speed=lambda r: 4.0 + r["seed"],
        motion_speed_truth=lambda r: 0.5 + 0.25 * r["seed"] + 0.1 * (r["subject"] == "subject2"),
    )
    metrics = ["motion_speed", "motion_speed_truth"]
    names = [p.name for p in write_figures(runs, metrics, tmp_path)]
    assert names == ["bars_motion_speed.png", "subjects_motion_speed.png", "line_data_window.png"]
    _, (ax,) = _figure(4, 3)
    assert _stimulus_line(ax, runs, "motion_speed")
    (line,) = [x for x in ax.get_lines() if x.get_label() == "stimulus"]
    # the mean over seeds (0.5, 0.75) of the mean over subjects (+0.05)
    assert line.get_ydata()[0] == pytest.approx(0.675)
    assert not _stimulus_line(ax, runs.drop(columns="motion_speed_truth"), "motion_speed")
    assert not _stimulus_line(ax, runs, "ssim")


def test_a_rewritten_report_removes_only_its_own_files_it_no_longer_writes(tmp_path):
    import json

    from harness.report import listed_files, remove_stale

    out = tmp_path / "report"
    names = ["table.md", "table.tex", "notes.md", "figures/bars_ssim.png", "figures/mine.png"]
    for name in [*names, "../outside.txt"]:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x")
    # the earlier report wrote the tables and one figure (and names a file outside its folder)
    earlier = ["table.md", "table.tex", "figures/bars_ssim.png", "../outside.txt", "gone.png"]
    (out / "runs.json").write_text(json.dumps({"runs": {}, "files": earlier}))
    assert listed_files(out / "runs.json") == earlier
    removed = remove_stale(out, [out / "table.md"], listed_files(out / "runs.json"))
    assert [p.relative_to(out.resolve()).as_posix() for p in removed] == [
        "figures/bars_ssim.png",
        "table.tex",
    ]
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == [
        "outside.txt",
        "report/figures/mine.png",
        "report/notes.md",
        "report/runs.json",
        "report/table.md",
    ]
    # a runs.json from before the list (or none, or a broken one) removes nothing
    for text in ('{"runs": {}}', '{"files": "notes.md"}', '{"files": null}', "[1]", "{"):
        (out / "runs.json").write_text(text)
        assert listed_files(out / "runs.json") == [], text
    assert listed_files(out / "missing.json") == []
    # a listed link is removed, not the file it points to
    (out / "link.png").symlink_to(out / "notes.md")
    assert remove_stale(out, [], ["link.png"]) == [out.resolve() / "link.png"]
    assert (out / "notes.md").exists() and not (out / "link.png").is_symlink()
