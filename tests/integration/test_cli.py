"""mvbench data: the commands a researcher types, and every bad input gets a clear message."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import cc2017_run_path, make_cc2017

from harness.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_simulate_then_inspect_json(tmp_path, capsys):
    out_dir = tmp_path / "smoke"
    code, out, _ = run(capsys, "data", "simulate", "smoke", "--out", str(out_dir), "--quiet")
    assert code == 0 and "SynthCC (smoke) written to" in out
    assert f"mvbench data inspect {out_dir}" in out
    code, out, _ = run(capsys, "data", "inspect", str(out_dir), "--json", "--check")
    assert code == 0
    report = json.loads(out)
    assert report["valid"] is True
    sub = report["subjects"]["subject1"]
    for key in (
        "roi_recall",
        "roi_false_positive_rate",
        "noise_ceiling",
        "lag_peak_tr",
        "true_lag_tr",
    ):
        assert key in sub
    # A second simulate with the same config is a no-op, not an error.
    code, out, _ = run(capsys, "data", "simulate", "smoke", "--out", str(out_dir), "--quiet")
    assert code == 0 and "nothing to do" in out
    # ... but a different config does not silently replace the data.
    code, _, err = run(
        capsys,
        "data",
        "simulate",
        "smoke",
        "--out",
        str(out_dir),
        "--quiet",
        "--set",
        "data.synth.seed=3",
    )
    assert code == 2 and "different config" in err and "--overwrite" in err


@pytest.mark.slow  # the default run's 4-minute budget; CI's slow tier runs it
def test_human_readable_inspect(smoke_dataset, capsys):
    code, out, _ = run(capsys, "data", "inspect", str(smoke_dataset), "--quiet")
    assert code == 0
    assert "subject1" in out and "benchmark validation passed" in out


@pytest.mark.slow  # the default run's 4-minute budget; CI's slow tier runs it
def test_check_fails_when_validation_fails(smoke_dataset, capsys):
    # Bonferroni over 512 vertices with 8 segments keeps almost nothing: recall fails.
    code, out, _ = run(
        capsys,
        "data",
        "inspect",
        str(smoke_dataset),
        "--quiet",
        "--check",
        "--profile",
        "smoke",
        "--set",
        "data.preprocess.selection.correction=bonferroni",
    )
    assert code == 1 and "FAILED" in out and "roi_recall" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "simulate", "tinny"], "unknown profile 'tinny'; available:"),
        (["data", "simulate", "paper"], "reads real data (data.source: cc2017)"),
        (
            ["data", "simulate", "smoke", "--set", "data.synth.brain.sheet_side=12"],
            "data.synth.brain.sheet_side: must be a power of two (4, 8, 16, 32, ...), got 12",
        ),
        (
            ["data", "simulate", "smoke", "--set", "data.synth.wrld.fps=3"],
            "data.synth.wrld: unknown key",
        ),
        (
            ["data", "inspect", "/nonexistent/dataset"],
            "/nonexistent/dataset: dataset folder not found",
        ),
    ],
)
def test_bad_input_gets_a_clear_message(argv, message, capsys):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err


def test_truncated_cifti_in_inspect_names_the_file(tmp_path, capsys):
    make_cc2017(tmp_path)
    path = cc2017_run_path(tmp_path, "subject1", "seg2", 1)
    path.write_bytes(path.read_bytes()[:-500])
    code, _, err = run(capsys, "data", "inspect", str(tmp_path), "--quiet")
    assert code == 2 and "seg2_1_Atlas.dtseries.nii" in err and "truncated" in err


def test_nan_voxels_in_inspect_name_the_file(tmp_path, capsys):
    from conftest import write_run

    make_cc2017(tmp_path)
    data = np.ones((12, 44))
    data[0, 3] = np.nan
    write_run(cc2017_run_path(tmp_path, "subject1", "test1", 2), data)
    code, _, err = run(capsys, "data", "inspect", str(tmp_path), "--quiet")
    assert code == 2 and "test1_2_Atlas.dtseries.nii: 1 NaN/Inf values" in err


def test_real_layout_without_truth_summarises_and_validates_what_it_can(tmp_path, capsys):
    make_cc2017(tmp_path, train=[("seg1", 2), ("seg2", 2), ("seg3", 2)], test=[("test1", 4)])
    code, out, _ = run(capsys, "data", "inspect", str(tmp_path), "--json", "--quiet", "--check")
    report = json.loads(out)
    assert code == 0 and report["has_truth"] is False and "checks" not in report
    sub = report["subjects"]["subject1"]
    assert sub["cortical_voxels"] == 40 and sub["noise_ceiling"] > 0.5
    assert "roi_recall" not in sub


def test_inspect_of_captions_only_clips_keeps_the_rest_and_says_why_no_lag(tmp_path, capsys):
    """Real data's <segment>_clips.csv hold captions, not SynthCC's attributes: the lag
    analysis is skipped with its reason, and the noise ceiling computed before it is kept."""
    from conftest import write_stimuli

    make_cc2017(tmp_path, train=[("seg1", 2), ("seg2", 2), ("seg3", 2)], test=[("test1", 4)])
    write_stimuli(tmp_path, {"seg1": 12, "seg2": 12, "seg3": 12, "test1": 12})
    code, out, _ = run(capsys, "data", "inspect", str(tmp_path), "--json", "--quiet")
    sub = json.loads(out)["subjects"]["subject1"]
    assert code == 0 and sub["noise_ceiling"] > 0.5 and "lag_accuracy" not in sub
    assert "shape, colour, direction" in sub["lag_skipped"]
    code, out, _ = run(capsys, "data", "inspect", str(tmp_path), "--quiet")
    assert code == 0 and "lag: not estimated: the lag analysis decodes" in out


def test_console_script_reports_errors_without_traceback(tmp_path):
    exe = shutil.which("mvbench") or f"{sys.executable} -m harness.cli"
    proc = subprocess.run(
        f"{exe} data simulate nosuchprofile", shell=True, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "unknown profile 'nosuchprofile'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_inspect_reads_the_other_layouts(smoke_dataset, tmp_path, capsys):
    from conftest import write_layout

    code, out, _ = run(capsys, "data", "inspect", str(smoke_dataset / "hcp"), "--json")
    report = json.loads(out)
    assert code == 0 and report["format"] == "hcp" and report["subjects"] == 3
    assert report["volumes"] == 3 * 60 and 0 < report["roi_voxels"] < 512
    write_layout(tmp_path)
    code, out, _ = run(capsys, "data", "inspect", str(tmp_path))
    assert code == 0 and "subject1 train: samples 12" in out
    code, _, err = run(capsys, "data", "inspect", str(tmp_path / "nothing"))
    assert code == 2 and "dataset folder not found" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "data", "inspect", str(tmp_path / "empty"))
    assert code == 2 and "not a dataset this tool reads" in err
