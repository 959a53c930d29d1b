import numpy as np
import pytest

from mindvideo.data.windows import make_windows, window_indices


def test_forward_window_drops_clips_that_run_off_the_end():
    clips, vols = window_indices(6, window=2, offset=1, edge="drop")
    assert clips.tolist() == [0, 1, 2, 3]
    assert vols.tolist() == [[1, 2], [2, 3], [3, 4], [4, 5]]


def test_clamped_window_keeps_every_clip():
    clips, vols = window_indices(4, window=3, offset=1, edge="clamp")
    assert clips.tolist() == [0, 1, 2, 3]
    assert vols.tolist() == [[1, 2, 3], [2, 3, 3], [3, 3, 3], [3, 3, 3]]


def test_negative_offset_looks_back():
    clips, vols = window_indices(5, window=1, offset=-2, edge="drop")
    assert clips.tolist() == [2, 3, 4]
    assert vols[:, 0].tolist() == [0, 1, 2]


def test_make_windows_gathers_frames():
    run = np.arange(5 * 3).reshape(5, 3).astype(float)  # (T, V)
    _, vols = window_indices(5, window=2, offset=0)
    w = make_windows(run, vols)
    assert w.shape == (4, 2, 3)  # (n, window, voxels)
    np.testing.assert_array_equal(w[1, 0], run[1])
    np.testing.assert_array_equal(w[1, 1], run[2])


@pytest.mark.parametrize("kwargs", [{"window": 0}, {"window": 2, "edge": "wrap"}])
def test_bad_window_settings_raise(kwargs):
    with pytest.raises(ValueError):
        window_indices(10, **kwargs)
