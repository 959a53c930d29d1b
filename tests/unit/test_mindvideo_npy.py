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


# ---------------------------------------------------------------------------------------------
# convert: the arrays in the CC2017 layout the stages read


def test_convert_writes_preprocessed_runs_and_stimuli_read_as_they_are(tmp_path):
    import json

    import pandas as pd

    from mindvideo.data.cc2017 import holds_preprocessed, open_stimuli, open_subject
    from mindvideo.data.mindvideo_npy import convert
    from mindvideo.data.paired import make_samples, prepare_fmri
    from mindvideo.data.preprocess import PreprocessConfig

    src = write_layout(tmp_path / "src")  # train (3, 4, 20) with captions; test (12, 20) flat
    out = tmp_path / "out"
    done = convert(src, out, tr=2.0, trs_per_segment=4)
    assert done.segments == {"train": 3, "test": 3} and done.voxels == {"subject1": 20}
    assert (done.fps, done.frames_per_tr, done.captioned) == (3.0, 6, ["train"])
    rec = open_subject(out, "subject1")
    assert rec.preprocessed and holds_preprocessed(out)
    assert rec.segments("train") == ["seg1", "seg2", "seg3"]
    assert rec.segments("test") == ["test1", "test2", "test3"]
    assert rec.check() == (2.0, 20)
    raw_train = np.load(src / "fmri_train_subject1.npy")
    raw_test = np.load(src / "fmri_test_subject1.npy")
    np.testing.assert_array_equal(rec.load("train", "seg2")[0], raw_train[1].astype(np.float32))
    np.testing.assert_array_equal(rec.load("test", "test3")[0], raw_test[8:].astype(np.float32))
    # read as they are: no detrending, z-scoring or voxel selection, whatever the config says
    fmri = prepare_fmri(rec, PreprocessConfig())
    assert fmri.stats is None and fmri.selected.tolist() == list(range(20))
    np.testing.assert_array_equal(
        fmri.segments["train"]["seg1"][0], raw_train[0].astype(np.float32)
    )
    stimuli = open_stimuli(out)
    assert (stimuli.fps, stimuli.frames_per_tr) == (3.0, 6)
    video = np.load(src / "video_train_256_3hz.npy")
    np.testing.assert_array_equal(stimuli.clip("seg2", 3, 6), video[1, 3])
    assert pd.read_csv(out / "stimuli" / "seg2_clips.csv")["caption"][1] == "clip 1 1"
    # MinD-Video's windows: at the clip's own TR, clamped at the end: every TR a sample
    train = make_samples(fmri, "train", 2, 0, "clamp", 1, stimuli)
    assert len(train) == 12 and train.caption[5] == "clip 1 1"
    np.testing.assert_array_equal(train.fmri[3, 1], raw_train[0, 3].astype(np.float32))  # clamped
    assert json.loads((out / "subject1" / "fmri" / "preprocessed.json").read_text())["tr"] == 2.0


def test_convert_again_writes_only_what_is_missing(tmp_path):
    from mindvideo.data.mindvideo_npy import convert

    src = write_layout(tmp_path / "src")
    out = tmp_path / "out"
    first = convert(src, out, trs_per_segment=4)
    assert first.written == 3 + 3 + 3 + 3 + 3 and first.skipped == 0  # runs, frames, captions
    (out / "stimuli" / "test2.npy").unlink()  # as if a call had been killed before writing it
    again = convert(src, out, trs_per_segment=4)
    assert (again.written, again.skipped) == (1, first.written - 1)
    with pytest.raises(DataError, match="converted earlier from other arrays or settings"):
        convert(src, out, tr=1.0, trs_per_segment=4)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="folder exists and is not a conversion"):
        convert(src, other, trs_per_segment=4)


def test_convert_names_what_does_not_fit(tmp_path):
    from mindvideo.data.mindvideo_npy import convert

    src = write_layout(tmp_path / "src")
    with pytest.raises(DataError, match=r"12 samples without a segment axis .* segments of 5"):
        convert(src, tmp_path / "a", trs_per_segment=5)
    with pytest.raises(DataError, match=r"video_train_256_3hz.npy: 6 frames per clip at 3 Hz"):
        convert(src, tmp_path / "b", tr=1.5, trs_per_segment=4)
    with pytest.raises(DataError, match="no fmri_train_<subject>.npy"):
        convert(tmp_path / "b", tmp_path / "c")


def test_a_subject_with_both_kinds_of_run_is_refused(tmp_path):
    from mindvideo.data.cc2017 import open_subject
    from mindvideo.data.mindvideo_npy import convert

    convert(write_layout(tmp_path / "src"), tmp_path / "out", trs_per_segment=4)
    stray = tmp_path / "out" / "subject1" / "fmri" / "seg1" / "cifti" / "seg1_1_Atlas.dtseries.nii"
    stray.parent.mkdir()
    stray.write_bytes(b"")
    with pytest.raises(DataError, match="both CIFTI runs .* and preprocessed .npy runs"):
        open_subject(tmp_path / "out", "subject1")
