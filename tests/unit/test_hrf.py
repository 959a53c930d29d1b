import numpy as np
import pytest

from mindvideo.data.hrf import double_gamma, tr_lag


@pytest.mark.parametrize("peak", [4.0, 5.0, 6.5])
def test_double_gamma_peaks_where_asked_and_undershoots(peak):
    t = np.arange(0, 32, 0.01)
    h = double_gamma(t, peak)
    assert t[h.argmax()] == pytest.approx(peak, abs=0.011)
    assert h.max() == pytest.approx(1.0)
    assert h.min() < -0.05  # the post-stimulus undershoot
    assert t[h.argmin()] > peak + 5
    assert h[0] == 0.0


def test_double_gamma_one_column_per_voxel():
    t = np.arange(0, 20, 0.5)
    peaks = np.array([4.0, 5.0, 6.0])
    h = double_gamma(t, peaks)
    assert h.shape == (len(t), 3)
    for j, p in enumerate(peaks):
        np.testing.assert_allclose(h[:, j], double_gamma(t, p))


def test_tr_lag_moves_with_the_peak():
    # A 2 s clip and 2 s volumes: a response peaking at 3 s is best seen 2 volumes later,
    # one peaking at 5 s three volumes later (the triangle of two boxcars centres at 6 s).
    lags = tr_lag(np.array([3.0, 5.0, 7.0]), tr=2.0)
    assert lags.tolist() == [2, 3, 4]
    assert np.all(np.diff(tr_lag(np.linspace(2, 9, 15), 2.0)) >= 0)
