import numpy as np
import pytest

from mindvideo.data.synth import brain as bm
from mindvideo.data.synth import world
from mindvideo.data.synth.config import BrainConfig, WorldConfig


def test_hilbert_order_is_a_path_through_neighbouring_vertices():
    side = 16
    order = bm.hilbert_order(side)
    assert sorted(order.tolist()) == list(range(side * side))
    r, c = np.divmod(order, side)
    steps = np.abs(np.diff(r)) + np.abs(np.diff(c))
    assert np.all(steps == 1)  # consecutive data columns are adjacent cortex


@pytest.fixture(scope="module")
def brain():
    return bm.make_brain(np.random.default_rng(0), BrainConfig(sheet_side=16))


def test_every_region_exists_and_visual_field_is_crossed(brain):
    counts = np.bincount(brain.region, minlength=len(bm.REGIONS))
    assert np.all(counts > 0)
    ev = brain.region == 0
    left = ev & (brain.hemisphere == 0)
    right = ev & (brain.hemisphere == 1)
    assert np.all(brain.prf_x[left] >= 0) and np.all(brain.prf_x[right] <= 0)
    assert np.all(np.isnan(brain.prf_x[~ev]))
    assert not brain.driven[brain.region == bm.REGIONS.index("non_visual")].any()


def test_subjects_differ_in_their_maps():
    cfg = BrainConfig(sheet_side=16)
    a = bm.make_brain(np.random.default_rng(0), cfg)
    b = bm.make_brain(np.random.default_rng(1), cfg)
    assert not np.array_equal(a.region, b.region)
    # ... but share the template: most vertices fall in the same region.
    assert (a.region == b.region).mean() > 0.8


def test_only_visual_voxels_are_driven(brain):
    cfg = WorldConfig(height=32, width=32)
    scenes = world.make_scenes(np.random.default_rng(1), 40, cfg)
    frames = world.render_segment(scenes, 240, cfg)
    table = world.frame_table(scenes, 240, cfg)
    drive = bm.neural_drive(brain, bm.stimulus_features(frames), table)
    assert drive.shape == (240, brain.n_voxels)
    visual = brain.region < 4
    assert np.all(drive[:, ~visual] == 0)
    assert np.all(drive[:, visual].std(0) > 0)
    bold = bm.bold_response(brain, drive, fps=6, tr=2.0)
    assert bold.shape == (20, brain.n_voxels)


def test_bold_lags_the_drive_by_the_hrf_peak(brain):
    drive = np.zeros((600, brain.n_voxels))
    drive[120] = 1.0  # an impulse at 20 s, 6 fps
    bold = bm.bold_response(brain, drive, fps=6, tr=0.5)  # fine TRs to see the peak
    peak_s = bold.argmax(0) * 0.5 + 0.25 - 20.0
    np.testing.assert_allclose(peak_s, brain.hrf_peak_s, atol=0.35)


def test_noise_is_unit_variance_ar1_and_spatially_smooth(brain):
    cfg = BrainConfig(sheet_side=16, ar1=0.5, noise_smoothness=2.0, smooth_noise_fraction=1.0)
    n = bm.noise(np.random.default_rng(0), 2000, brain, cfg)
    assert n.std() == pytest.approx(1.0, abs=0.05)
    lag1 = np.mean([np.corrcoef(n[1:, v], n[:-1, v])[0, 1] for v in range(0, 512, 16)])
    assert lag1 == pytest.approx(0.5, abs=0.05)
    # Neighbouring columns (Hilbert order) are neighbouring vertices: correlated noise.
    neighbour = np.mean([np.corrcoef(n[:, v], n[:, v + 1])[0, 1] for v in range(0, 250, 5)])
    far = np.mean([np.corrcoef(n[:, v], n[:, v + 128])[0, 1] for v in range(0, 120, 5)])
    assert neighbour > 0.5 and abs(far) < neighbour / 2
