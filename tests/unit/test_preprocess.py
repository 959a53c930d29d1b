import math

import numpy as np
import pytest

from mindvideo.data.preprocess import (
    Reproducibility,
    SelectionConfig,
    detrend,
    pad_to_patch,
    reproducibility,
    segment_reproducibility,
    select_voxels,
    zscore,
)
from mindvideo.errors import DataError


def test_detrend_removes_a_fourth_order_polynomial_exactly():
    t = np.linspace(0, 1, 50)[:, None]
    poly = 3 + 2 * t - 5 * t**2 + 4 * t**3 - 7 * t**4
    rng = np.random.default_rng(0)
    signal = np.sin(2 * np.pi * 12 * t)  # fast: nearly orthogonal to the polynomial
    out = detrend(poly + signal, order=4)
    np.testing.assert_allclose(detrend(poly, 4), 0, atol=1e-5)
    assert np.corrcoef(out[:, 0], signal[:, 0])[0, 1] > 0.99
    assert detrend(rng.standard_normal((50, 3)), 4).mean(0) == pytest.approx(0, abs=1e-5)


def test_zscore_unit_variance_and_constant_voxels():
    x = np.column_stack([np.arange(10.0), np.full(10, 7.0)])
    z = zscore(x)
    assert z[:, 0].mean() == pytest.approx(0, abs=1e-6)
    assert z[:, 0].std() == pytest.approx(1, abs=1e-6)
    assert np.all(z[:, 1] == 0)


def _segment(b):
    a = np.array([1.0, 2.0, 3.0, 4.0])
    return np.stack([a, np.asarray(b, float)])[:, :, None]  # (repeats, T, 1 voxel)


def test_reproducibility_matches_a_hand_worked_example():
    # a = 1 2 3 4 against b: deviations (-1.5 -.5 .5 1.5) . b's deviations / 5
    #   b = 1 3 2 4 -> r = 4/5 = 0.8 ; b = 2 1 4 3 -> r = 3/5 = 0.6 ; b = 3 1 2 4 -> r = 0.4
    z = [segment_reproducibility(_segment(b)) for b in ([1, 3, 2, 4], [2, 1, 4, 3], [3, 1, 2, 4])]
    np.testing.assert_allclose(np.ravel(z), [math.atanh(0.8), math.atanh(0.6), math.atanh(0.4)])
    rep = reproducibility(z)
    # mean z = 0.73846, sd (ddof 1) = 0.33978, se = sd / sqrt(3) = 0.19617, t = 3.7645
    assert rep.t[0] == pytest.approx(3.7645, abs=1e-3)
    # Student t with 2 df has a closed-form tail: P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2
    t = rep.t[0]
    assert rep.p[0] == pytest.approx(0.5 * (1 - t / math.sqrt(t * t + 2)), rel=1e-9)
    assert rep.p[0] == pytest.approx(0.0319, abs=1e-3)


def test_segment_reproducibility_averages_all_repeat_pairs():
    rng = np.random.default_rng(1)
    runs = rng.standard_normal((3, 40, 2))
    pairs = [(0, 1), (0, 2), (1, 2)]
    expect = np.mean(
        [np.arctanh(np.corrcoef(runs[i, :, 0], runs[j, :, 0])[0, 1]) for i, j in pairs]
    )
    assert segment_reproducibility(runs)[0] == pytest.approx(expect)


def test_reproducibility_needs_two_segments():
    with pytest.raises(DataError, match="at least 2 segments"):
        reproducibility([np.zeros(3)])


def test_selection_bonferroni_and_keep_fraction():
    p = np.array([1e-6, 0.004, 0.02, 0.5, 1e-9, 0.3, 0.2, 0.9, 0.1, 0.05])
    rep = Reproducibility(z=np.zeros((3, 10)), t=-np.log(p), p=p)
    # Uncorrected p < 0.01: voxels 0, 1, 4. Bonferroni over 10: p < 0.001: 0 and 4.
    assert select_voxels(rep, SelectionConfig(correction="none", keep_fraction=1)).tolist() == [
        0,
        1,
        4,
    ]
    assert select_voxels(rep, SelectionConfig(keep_fraction=1)).tolist() == [0, 4]
    # keep_fraction caps the count at 10% of all voxels: the single most significant.
    assert select_voxels(rep, SelectionConfig(keep_fraction=0.1)).tolist() == [4]


def test_pad_to_patch_wraps_the_first_voxels():
    x = np.arange(2 * 5).reshape(2, 5)
    y = pad_to_patch(x, 4)
    assert y.shape == (2, 8)
    np.testing.assert_array_equal(y[:, 5:], x[:, :3])
    assert pad_to_patch(np.ones((1, 3)), 16).shape == (1, 16)  # wraps more than once
    assert pad_to_patch(x, 5) is x
