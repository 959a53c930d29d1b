import numpy as np
import pytest
from conftest import small_axis, write_run

from mindvideo.data.cifti import dtseries_info, read_cortical, read_mask, write_dscalar
from mindvideo.errors import DataError


def test_roundtrip_keeps_cortex_and_drops_subcortical(tmp_path):
    data = np.arange(6 * 44, dtype=np.float32).reshape(6, 44)
    path = write_run(tmp_path / "run_Atlas.dtseries.nii", data, tr=1.5)
    info = dtseries_info(path)
    assert (info.n_volumes, info.tr, info.n_cortical) == (6, 1.5, 40)
    np.testing.assert_array_equal(read_cortical(path), data[:, :40])


def test_truncated_file_names_the_file(tmp_path):
    path = write_run(tmp_path / "seg1_1_Atlas.dtseries.nii", np.ones((50, 44)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 3000])
    with pytest.raises(DataError, match=r"seg1_1_Atlas\.dtseries\.nii.*truncated"):
        read_cortical(path)


def test_garbage_file_names_the_file(tmp_path):
    path = tmp_path / "seg1_1_Atlas.dtseries.nii"
    path.write_bytes(b"not a nifti file at all" * 10)
    with pytest.raises(DataError, match=r"seg1_1_Atlas\.dtseries\.nii: cannot read"):
        dtseries_info(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_voxels_are_reported(tmp_path, bad):
    data = np.ones((5, 44))
    data[3, 7] = bad
    path = write_run(tmp_path / "x.dtseries.nii", data)
    with pytest.raises(
        DataError,
        match=r"x\.dtseries\.nii: 1 NaN/Inf values in 1 cortical "
        r"vertices \(first vertex columns \[7\], volumes \[3\]\)",
    ):
        read_cortical(path)


def test_nan_in_subcortical_voxels_is_ignored(tmp_path):
    data = np.ones((5, 44))
    data[:, 42] = np.nan  # a volume voxel: not cortex
    path = write_run(tmp_path / "x.dtseries.nii", data)
    assert read_cortical(path).shape == (5, 40)


def test_masks_from_npy_and_dscalar(tmp_path):
    values = np.zeros(44)
    values[[1, 5, 39]] = 1
    write_dscalar(tmp_path / "roi.dscalar.nii", values, small_axis(), "visual")
    np.save(tmp_path / "roi.npy", values[:40] > 0)
    for name in ("roi.dscalar.nii", "roi.npy"):
        mask = read_mask(tmp_path / name, 40)
        assert np.nonzero(mask)[0].tolist() == [1, 5, 39]
    with pytest.raises(DataError, match="40 entries but the fMRI files have 50"):
        read_mask(tmp_path / "roi.npy", 50)
    np.save(tmp_path / "empty.npy", np.zeros(40, bool))
    with pytest.raises(DataError, match="selects no grayordinate"):
        read_mask(tmp_path / "empty.npy", 40)
