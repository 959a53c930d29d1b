"""The evaluation's promises on SynthCC tiny (slow: trains the judges and CLIP, ~15 min)."""

import json
import shutil

import numpy as np
import pytest

from harness.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "synthcc"
    assert main(["data", "simulate", "tiny", "--out", str(root), "--quiet"]) == 0
    return root


def score(capsys, pred, truth):
    capsys.readouterr()
    store = str(truth.parent / "store")  # the dataset's judges and CLIP: its foundation entry
    argv = ["score", "--pred", str(pred), "--truth", str(truth), "--json", "--quiet"]
    assert main([*argv, "--store", store]) == 0
    return json.loads(capsys.readouterr().out)["metrics"]


def test_truth_is_perfect_and_shuffled_is_chance(tiny, tmp_path, capsys):
    truth = tmp_path / "truth"
    assert main(["data", "export", str(tiny), "--out", str(truth)]) == 0
    m = score(capsys, truth, tiny)
    assert m["video_2way_top1"] == 1.0 and m["ssim"] == pytest.approx(1.0)
    names = sorted(p.stem for p in truth.glob("*.npy"))
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    perm = np.random.default_rng(0).permutation(len(names))
    for a, b in zip(names, np.array(names)[perm], strict=True):
        shutil.copy(truth / f"{a}.npy", shuffled / f"{b}.npy")
    m = score(capsys, shuffled, tiny)
    se = m["video_2way_top1_strict_se"]
    assert abs(m["video_2way_top1_strict"] - 0.5) < 3 * se + 0.05


def test_ridge_beats_the_shuffled_control(tiny, capsys):
    capsys.readouterr()
    store = str(tiny.parent / "store")
    assert main(["baselines", str(tiny), "--json", "--quiet", "--store", store]) == 0
    rows = json.loads(capsys.readouterr().out)
    for subject, r in rows.items():
        gap = r["ridge"]["video_2way_top1_strict"] - r["shuffled"]["video_2way_top1_strict"]
        assert gap >= 0.15, (subject, r)
