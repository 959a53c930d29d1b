"""Released side-by-side GIFs (ground truth | reconstruction): the panels are found by their
padding, and `mvbench score --side-by-side` scores them as scikit-image does on the same crops."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from harness.cli import main
from mindvideo.errors import DataError
from mindvideo.eval.video_io import read_gif, split_side_by_side, write_gif

FRAMES, SIDE = 6, 32


def panels(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth ground-truth clip and a noisy reconstruction of it, (F, S, S, 3) uint8."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (FRAMES, 8, 8, 3)).repeat(4, axis=1).repeat(4, axis=2)
    noisy = base + rng.normal(0, 30, base.shape)
    return base.astype(np.uint8), np.clip(noisy, 0, 255).astype(np.uint8)


def side_by_side(truth, pred, pad=3, gap=4, colour=255) -> np.ndarray:
    f, h, w, _ = truth.shape
    w2 = pred.shape[2]
    out = np.full((f, h + 2 * pad, w + w2 + gap + 2 * pad, 3), colour, np.uint8)
    out[:, pad : pad + h, pad : pad + w] = truth
    out[:, pad : pad + h, pad + w + gap : pad + w + gap + w2] = pred
    return out


def test_panels_are_found_by_their_padding(tmp_path):
    truth, pred = panels(0)
    left, right = split_side_by_side(side_by_side(truth, pred), tmp_path / "x.gif")
    assert np.array_equal(left, truth) and np.array_equal(right, pred)
    # black padding, none around: the same
    left, right = split_side_by_side(side_by_side(truth, pred, pad=0, colour=0), tmp_path)
    assert np.array_equal(left, truth) and np.array_equal(right, pred)
    # no padding at all: the width splits evenly
    left, right = split_side_by_side(np.concatenate([truth, pred], axis=2), tmp_path)
    assert np.array_equal(left, truth) and np.array_equal(right, pred)
    # a uniform stripe inside a panel does not cut it in two
    striped = truth.copy()
    striped[:, :, 12:14] = 0
    left, right = split_side_by_side(side_by_side(striped, pred), tmp_path)
    assert np.array_equal(left, striped) and np.array_equal(right, pred)


def test_panels_of_different_widths_are_refused_by_name(tmp_path):
    truth, pred = panels(1)
    odd = side_by_side(truth, pred[:, :, :-5])
    with pytest.raises(DataError, match=r"x.gif: the 2 panels found .* differ in width"):
        split_side_by_side(odd, tmp_path / "x.gif")
    with pytest.raises(DataError, match="every row is one colour"):
        split_side_by_side(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "x.gif")


def test_score_side_by_side_equals_scikit_image_on_the_crops(tmp_path, capsys):
    folder = tmp_path / "released"
    folder.mkdir()
    for k in range(3):
        write_gif(folder / f"test{k}.gif", side_by_side(*panels(k)), fps=3.0)
    code = main(["score", "--side-by-side", str(folder), "--no-track", "--json", "--quiet"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_samples"] == 3
    ssim, psnr = [], []
    for k in range(3):  # the GIFs as read back (palette-quantised), cropped by hand
        clip = read_gif(folder / f"test{k}.gif")
        truth, pred = clip[:, 3 : 3 + SIDE, 3 : 3 + SIDE], clip[:, 3 : 3 + SIDE, 39 : 39 + SIDE]
        ssim.append(
            np.mean(
                [
                    structural_similarity(t, p, channel_axis=-1, data_range=255)
                    for t, p in zip(truth, pred, strict=True)
                ]
            )
        )
        psnr.append(
            np.mean(
                [
                    peak_signal_noise_ratio(t, p, data_range=255)
                    for t, p in zip(truth, pred, strict=True)
                ]
            )
        )
    assert report["metrics"]["ssim"] == pytest.approx(np.mean(ssim), abs=1e-6)
    assert report["metrics"]["psnr"] == pytest.approx(np.mean(psnr), abs=1e-6)


def test_side_by_side_with_pred_or_truth_is_refused(tmp_path, capsys):
    assert main(["score", "--side-by-side", str(tmp_path), "--pred", str(tmp_path)]) == 2
    assert "leave out --pred and --truth" in capsys.readouterr().err
    assert main(["score", "--truth", str(tmp_path)]) == 2
    assert "give --pred and --truth" in capsys.readouterr().err
