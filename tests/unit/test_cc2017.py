import numpy as np
import pytest
from conftest import REAL_LEFT, REAL_MESH, REAL_RIGHT, cc2017_run_path, make_cc2017, write_run

from mindvideo.data.cc2017 import list_subjects, open_subject, resolve_root
from mindvideo.data.cifti import SurfaceModel, brain_axis
from mindvideo.errors import DataError


def test_real_naming_and_grayordinates_load(tmp_path):
    """A file shaped like CC2017's: 59,412 cortical vertices then subcortical voxels."""
    rng = np.random.default_rng(0)
    axis = brain_axis(
        [
            SurfaceModel(
                "CORTEX_LEFT", REAL_MESH, np.sort(rng.choice(REAL_MESH, REAL_LEFT, False))
            ),
            SurfaceModel(
                "CORTEX_RIGHT", REAL_MESH, np.sort(rng.choice(REAL_MESH, REAL_RIGHT, False))
            ),
        ],
        n_subcortical=100,
    )
    root = tmp_path / "video_fmri_dataset"
    data = rng.standard_normal((6, REAL_LEFT + REAL_RIGHT + 100)).astype(np.float32)
    for seg, rep in [("seg1", 1), ("seg1", 2), ("test1", 1), ("test1", 2)]:
        write_run(cc2017_run_path(root, "subject1", seg, rep), data, axis=axis)
    rec = open_subject(tmp_path, "subject1")  # the parent of video_fmri_dataset/ works too
    assert rec.segments("train") == ["seg1"] and rec.segments("test") == ["test1"]
    assert rec.check() == (2.0, 59412)
    runs = rec.load("train", "seg1")
    assert runs.shape == (2, 6, 59412)
    np.testing.assert_array_equal(runs[0], data[:, :59412])


def test_segments_sort_naturally_and_split_by_name(tmp_path):
    make_cc2017(tmp_path, train=[(f"seg{k}", 2) for k in (1, 2, 10, 3)], test=[("test1", 3)])
    rec = open_subject(tmp_path, "subject1")
    assert rec.segments("train") == ["seg1", "seg2", "seg3", "seg10"]
    assert rec.repeats("test", "test1") == 3
    assert list_subjects(tmp_path) == ["subject1"]


def test_missing_folder_and_subject(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        resolve_root(tmp_path / "nope")
    with pytest.raises(DataError, match="no subject\\*/fmri/ folder"):
        resolve_root(tmp_path)
    make_cc2017(tmp_path)
    with pytest.raises(
        DataError,
        match=r"subject9/fmri: subject folder not found \(subjects "
        r"present: subject1\)",
    ):
        open_subject(tmp_path, "subject9")


def test_missing_repeat_is_named(tmp_path):
    make_cc2017(tmp_path, test=[("test1", 3)])
    cc2017_run_path(tmp_path, "subject1", "test1", 2).unlink()
    with pytest.raises(DataError, match=r"repeat\(s\) \[2\] of test1 are missing"):
        open_subject(tmp_path, "subject1")


def test_repeats_with_different_lengths(tmp_path):
    make_cc2017(tmp_path)
    write_run(cc2017_run_path(tmp_path, "subject1", "seg2", 2), np.ones((9, 44)))
    rec = open_subject(tmp_path, "subject1")
    with pytest.raises(
        DataError,
        match=r"repeats of segment seg2 have different numbers of "
        r"volumes \(seg2_1_Atlas.dtseries.nii: 12, "
        r"seg2_2_Atlas.dtseries.nii: 9\)",
    ):
        rec.check()


def test_runs_with_different_tr(tmp_path):
    make_cc2017(tmp_path)
    write_run(cc2017_run_path(tmp_path, "subject1", "seg2", 2), np.ones((12, 44)), tr=0.72)
    with pytest.raises(DataError, match="seg2_2_Atlas.dtseries.nii: TR is 0.72 s"):
        open_subject(tmp_path, "subject1").check()


def test_file_in_the_wrong_segment_folder(tmp_path):
    make_cc2017(tmp_path)
    src = cc2017_run_path(tmp_path, "subject1", "seg1", 1)
    dst = src.parent.parent.parent / "seg2" / "cifti" / "seg1_3_Atlas.dtseries.nii"
    dst.write_bytes(src.read_bytes())
    with pytest.raises(DataError, match="names segment seg1 but sits in folder seg2"):
        open_subject(tmp_path, "subject1")


def _axis(*surfaces):
    return brain_axis([SurfaceModel(name, 25, np.asarray(v)) for name, v in surfaces], 4)


def test_runs_are_matched_by_structure_and_vertex_not_by_column_order(tmp_path):
    """A repeat whose hemispheres are stored right before left, or whose vertices come in
    another order, gives each vertex's values in the same column as the first run."""
    rng = np.random.default_rng(0)
    left, right = rng.standard_normal((12, 20)), rng.standard_normal((12, 20))
    sub = rng.standard_normal((12, 4))
    standard = _axis(("CORTEX_LEFT", range(20)), ("CORTEX_RIGHT", range(20)))
    write_run(
        cc2017_run_path(tmp_path, "subject1", "seg1", 1),
        np.hstack([left, right, sub]),
        axis=standard,
    )
    swapped = _axis(("CORTEX_RIGHT", range(20)), ("CORTEX_LEFT", range(20)))
    write_run(
        cc2017_run_path(tmp_path, "subject1", "seg1", 2),
        np.hstack([right, left, sub]),
        axis=swapped,
    )
    order = rng.permutation(20)
    shuffled = _axis(("CORTEX_LEFT", order), ("CORTEX_RIGHT", range(20)))
    write_run(
        cc2017_run_path(tmp_path, "subject1", "seg1", 3),
        np.hstack([left[:, order], right, sub]),
        axis=shuffled,
    )
    write_run(
        cc2017_run_path(tmp_path, "subject1", "test1", 1),
        np.hstack([left, right, sub]),
        axis=standard,
    )
    runs = open_subject(tmp_path, "subject1").load("train", "seg1")
    expected = np.hstack([left, right]).astype(np.float32)
    for repeat in runs:
        np.testing.assert_array_equal(repeat, expected)


def test_a_run_on_other_vertices_is_refused_by_name(tmp_path):
    data = np.zeros((12, 44))
    standard = _axis(("CORTEX_LEFT", range(20)), ("CORTEX_RIGHT", range(20)))
    write_run(cc2017_run_path(tmp_path, "subject1", "seg1", 1), data, axis=standard)
    other = _axis(("CORTEX_LEFT", range(1, 21)), ("CORTEX_RIGHT", range(20)))
    path = write_run(cc2017_run_path(tmp_path, "subject1", "seg1", 2), data, axis=other)
    write_run(cc2017_run_path(tmp_path, "subject1", "test1", 1), data, axis=standard)
    with pytest.raises(DataError, match=rf"{path}: its cortical grayordinates are not those of"):
        open_subject(tmp_path, "subject1").load("train", "seg1")


def _frames(root, segment: str, n: int) -> None:
    (root / "subject1" / "fmri").mkdir(parents=True, exist_ok=True)  # a CC2017 layout
    folder = root / "stimuli"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{segment}.npy", np.zeros((n, 4, 4, 3), dtype=np.uint8))


def test_frames_at_another_rate_than_they_are_read_at_are_refused(tmp_path):
    from mindvideo.data.cc2017 import open_stimuli

    _frames(tmp_path, "seg1", 10 * 12)  # 6 fps: 12 frames per 2 s TR
    stimuli = open_stimuli(tmp_path)  # the release's default: 3 fps, 6 per TR
    assert (stimuli.fps, stimuli.frames_per_tr) == (3.0, 6)
    with pytest.raises(DataError, match=r"seg1\.npy: 120 frames for 10 volumes is 12\.0 frames"):
        stimuli.check_length("seg1", 10)
    with pytest.raises(DataError, match=r'"fps": 6, "frames_per_tr": 12'):
        stimuli.check_length("seg1", 10)
    with pytest.raises(DataError, match="cover fewer than the 30 volumes"):
        stimuli.check_length("seg1", 30)
    (tmp_path / "stimuli" / "stimuli.json").write_text('{"fps": 6, "frames_per_tr": 12}')
    stimuli = open_stimuli(tmp_path)
    assert (stimuli.fps, stimuli.frames_per_tr) == (6.0, 12)
    stimuli.check_length("seg1", 10)  # now read at their own rate
    _frames(tmp_path, "seg2", 10 * 12 + 5)  # a few trailing frames: fine
    stimuli.check_length("seg2", 10)


@pytest.mark.parametrize(
    "text",
    [
        '{"fps": 6}',
        '{"fps": 0, "frames_per_tr": 12}',
        '{"fps": 6, "frames_per_tr": 1.5}',
        '{"fps": 6, "frames_per_tr": 12, "x": 1}',
        "[6, 12]",
        "not json",
    ],
)
def test_a_bad_stimuli_json_names_the_file_and_the_expected_form(tmp_path, text):
    from mindvideo.data.cc2017 import open_stimuli

    _frames(tmp_path, "seg1", 60)
    (tmp_path / "stimuli" / "stimuli.json").write_text(text)
    with pytest.raises(DataError, match=r"stimuli\.json: (expected|not a JSON)"):
        open_stimuli(tmp_path)
