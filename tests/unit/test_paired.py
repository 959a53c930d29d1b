import numpy as np
import pytest

from mindvideo.data.cc2017 import open_stimuli, open_subject
from mindvideo.data.paired import make_samples, prepare_fmri
from mindvideo.errors import DataError


@pytest.fixture(scope="module")
def fmri(smoke_dataset, smoke_profile):
    return prepare_fmri(open_subject(smoke_dataset, "subject1"), smoke_profile.data.preprocess)


def test_windows_pair_fmri_with_annotated_clips(fmri, smoke_dataset, smoke_profile):
    p = smoke_profile.data.synth.protocol
    stimuli = open_stimuli(smoke_dataset)
    s = make_samples(fmri, "train", window=2, offset=2, edge="drop", patch_size=16, stimuli=stimuli)
    per_seg = p.train_trs - 3  # offset 2 + window 2 - 1 clips fall off each segment's end
    assert len(s) == p.train_segments * per_seg
    assert s.fmri.shape[:2] == (len(s), 2) and s.fmri.shape[2] % 16 == 0
    assert s.fmri.shape[2] >= fmri.selected.size
    assert (s.repeat == -1).all()  # repeats averaged
    clips = stimuli.clips("seg2")
    row = np.nonzero((s.segment == "seg2") & (s.clip == 5))[0][0]
    assert s.video_class[row] == clips.loc[5, "video_class"]
    assert s.caption[row] == clips.loc[5, "caption"]
    np.testing.assert_allclose(
        s.fmri[row, 0, : fmri.selected.size], fmri.segments["train"]["seg2"][0, 7]
    )


def test_separate_test_repeats_multiply_samples(smoke_dataset, smoke_profile):
    cfg = smoke_profile.data.preprocess.model_copy(update={"test_repeats": "separate"})
    fmri = prepare_fmri(open_subject(smoke_dataset, "subject2"), cfg)
    s = make_samples(fmri, "test", window=1, offset=0, edge="drop", patch_size=1)
    p = smoke_profile.data.synth.protocol
    assert len(s) == p.test_segments * p.test_trs * p.test_repeats
    assert s.scene_cut is None and sorted(set(s.repeat)) == list(range(p.test_repeats))


def test_selection_that_keeps_nothing_says_what_to_change(smoke_dataset, smoke_profile):
    sel = smoke_profile.data.preprocess.selection.model_copy(update={"p_threshold": 1e-300})
    cfg = smoke_profile.data.preprocess.model_copy(update={"selection": sel})
    with pytest.raises(DataError, match="no voxel passes the reproducibility test.*p_threshold"):
        prepare_fmri(open_subject(smoke_dataset, "subject1"), cfg)


def test_clip_frames_are_sampled_evenly(smoke_dataset):
    stimuli = open_stimuli(smoke_dataset)
    assert stimuli.frames_per_tr == 12  # 2 s at 6 fps
    full = stimuli.frames("seg1")
    three_fps = stimuli.clip("seg1", 4, 6)
    np.testing.assert_array_equal(three_fps, full[48:60:2])
    np.testing.assert_array_equal(stimuli.clip("seg1", 4, 12), full[48:60])
    with pytest.raises(DataError, match="at most 12"):
        stimuli.clip("seg1", 0, 24)
    with pytest.raises(DataError, match="clip 99 ends after the last frame"):
        stimuli.clip("seg1", 99, 6)


def test_clip_video_follows_the_samples(fmri, smoke_dataset):
    from mindvideo.data.paired import clip_video

    stimuli = open_stimuli(smoke_dataset)
    s = make_samples(fmri, "test", window=2, offset=2, edge="drop", patch_size=16, stimuli=stimuli)
    video = clip_video(stimuli, s, 6)
    assert video.shape == (len(s), 6, 32, 32, 3) and video.dtype == np.uint8
    np.testing.assert_array_equal(video[3], stimuli.clip(s.segment[3], s.clip[3], 6))


def test_a_training_fraction_keeps_the_first_segments_nested(tmp_path):
    """data.train_fraction: the first round(f x n) training segments, scans and pairs alike
    (at least one, nested), after validation segments are held out; test untouched."""
    from conftest import make_cc2017

    from mindvideo.data.paired import PairingConfig, open_training, sample_counts
    from mindvideo.data.preprocess import PreprocessConfig, SelectionConfig

    train = tuple((f"seg{k}", 2) for k in range(1, 9))
    make_cc2017(tmp_path, train=train, test=(("test1", 3),), n_tr=12)
    kept = {
        f: open_training(tmp_path, "subject1", (), f).segments("train")
        for f in (0.125, 0.25, 0.5, 1.0)
    }
    assert kept[0.125] == ["seg1"] and kept[0.25] == ["seg1", "seg2"]
    assert kept[0.5] == ["seg1", "seg2", "seg3", "seg4"] and len(kept[1.0]) == 8
    assert open_training(tmp_path, "subject1", (), 0.01).segments("train") == ["seg1"]
    held = open_training(tmp_path, "subject1", ("seg8",), 0.5)
    assert held.segments("train") == ["seg1", "seg2", "seg3", "seg4"]  # of the 7 left: 3.5 -> 4
    assert held.segments("val") == ["seg8"] and held.segments("test") == ["test1"]
    cfg = PairingConfig(
        preprocess=PreprocessConfig(selection=SelectionConfig(correction="none")),
        window_offset=0,
        train_fraction=0.25,
    )
    assert sample_counts(tmp_path, cfg) == {"train": 2 * 11, "test": 11}
    with pytest.raises(ValueError):
        PairingConfig(train_fraction=0.0)
