import numpy as np
import pytest
from conftest import write_layout

from mindvideo.data.mindvideo_npy import check_finite, list_subjects, load_split
from mindvideo.errors import DataError


def test_layout_loads_with_or_without_segment_axis(tmp_path):
    write_layout(tmp_path)
    train = load_split(tmp_path, "subject1", "train")
    assert train.fmri.shape == (12, 20) and train.segments == 3
    assert train.video.shape == (12, 6, 8, 8, 3)
    assert train.text[5] == "clip 1 1"
    test = load_split(tmp_path, "subject1", "test")
    assert test.fmri.shape == (12, 20) and test.segments is None and test.text is None
    assert isinstance(train.fmri, np.memmap) or isinstance(train.fmri.base, np.memmap)
    assert list_subjects(tmp_path) == ["subject1"]


def test_wrong_shape_is_named(tmp_path):
    write_layout(tmp_path)
    np.save(tmp_path / "fmri_train_subject1.npy", np.zeros((2, 3, 4, 5)))
    with pytest.raises(
        DataError,
        match=r"fmri_train_subject1.npy: fMRI must have shape "
        r"\(segments, trs, \.\.\.\) or \(samples, \.\.\.\), "
        r"got \(2, 3, 4, 5\)",
    ):
        load_split(tmp_path, "subject1", "train")


def test_counts_must_pair(tmp_path):
    write_layout(tmp_path)
    np.save(tmp_path / "fmri_test_subject1.npy", np.zeros((11, 20)))
    with pytest.raises(DataError, match="11 fMRI samples but video_test_256_3hz.npy has 12"):
        load_split(tmp_path, "subject1", "test")


def test_video_must_be_uint8_rgb(tmp_path):
    write_layout(tmp_path)
    np.save(tmp_path / "video_test_256_3hz.npy", np.zeros((12, 6, 8, 8, 3), np.float32))
    with pytest.raises(DataError, match="video must be uint8"):
        load_split(tmp_path, "subject1", "test")


def test_object_captions_are_refused_not_unpickled(tmp_path):
    write_layout(tmp_path, text=False)
    np.save(tmp_path / "text_train_256_3hz.npy", np.array([["a"] * 4] * 3, dtype=object))
    with pytest.raises(DataError, match="refused for safety"):
        load_split(tmp_path, "subject1", "train")


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_split(tmp_path / "nope", "subject1", "train")
    write_layout(tmp_path)
    with pytest.raises(DataError, match="fmri_train_subject2.npy: file not found"):
        load_split(tmp_path, "subject2", "train")
    (tmp_path / "video_test_256_3hz.npy").unlink()
    with pytest.raises(DataError, match="no video_test_<size>_<fps>hz.npy"):
        load_split(tmp_path, "subject1", "test")


def test_nan_fmri_is_found(tmp_path):
    write_layout(tmp_path)
    arr = np.load(tmp_path / "fmri_test_subject1.npy")
    arr[7, 3] = np.nan
    np.save(tmp_path / "fmri_test_subject1.npy", arr)
    split = load_split(tmp_path, "subject1", "test")
    with pytest.raises(DataError, match=r"NaN/Inf in samples \[7\]"):
        check_finite(split, tmp_path / "fmri_test_subject1.npy", chunk=4)


def test_samples_are_windowed_within_segments(tmp_path):
    from mindvideo.data.mindvideo_npy import to_samples

    write_layout(tmp_path, n_seg=3, n_tr=5, voxels=20)
    train = load_split(tmp_path, "subject1", "train")
    s = to_samples(train, window=2, offset=1, edge="drop", patch_size=16)
    assert len(s) == 3 * (5 - 2) and s.fmri.shape == (9, 2, 32)
    raw = np.load(tmp_path / "fmri_train_subject1.npy")
    np.testing.assert_allclose(s.fmri[3, :, :20], raw[1, 1:3])  # segment 2, clip 0
    assert s.caption[3] == "clip 1 0"
    flat = load_split(tmp_path, "subject1", "test")
    with pytest.raises(DataError, match="give trs_per_segment"):
        to_samples(flat, window=2, offset=0, edge="drop", patch_size=1)
    assert len(to_samples(flat, 2, 0, "drop", 1, trs_per_segment=5)) == 12
