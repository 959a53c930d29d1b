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
