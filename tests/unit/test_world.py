import numpy as np
import pytest

from mindvideo.data.synth import world
from mindvideo.data.synth.config import WorldConfig


def test_the_world_is_rich_enough_for_50_way_scores():
    assert len(world.SHAPES) >= 10 and len(world.COLOURS) >= 8 and len(world.DIRECTIONS) >= 8
    assert world.N_FRAME_CLASSES >= 80 and world.N_VIDEO_CLASSES >= 80
    names = world.class_names()
    assert len(set(names["frame"])) == world.N_FRAME_CLASSES
    assert len(set(names["video"])) == world.N_VIDEO_CLASSES


def test_scenes_cover_the_segment_with_2_to_8_s_shots():
    cfg = WorldConfig()
    scenes = world.make_scenes(np.random.default_rng(3), 120.0, cfg)
    starts = np.array([s.start_s for s in scenes])
    durs = np.array([s.duration_s for s in scenes])
    np.testing.assert_allclose(starts[1:], (starts + durs)[:-1])
    assert starts[0] == 0 and starts[-1] + durs[-1] == pytest.approx(120.0)
    assert np.all((durs[:-1] >= 2.0) & (durs[:-1] <= 8.0))  # the last one is cut at the end
    for a, b in zip(scenes, scenes[1:], strict=False):
        assert (a.shape, a.colour) != (b.shape, b.colour)  # a cut is visible


def test_render_draws_the_object_in_its_colour_and_moves_it():
    cfg = WorldConfig(height=48, width=48, fps=6)
    scene = world.Scene(
        start_s=0,
        duration_s=4,
        shape=world.SHAPES.index("circle"),
        colour=world.COLOUR_NAMES.index("red"),
        direction=0,
        speed=0.1,
        size=0.2,
        texture=0,
        background=0,
        background_seed=1,
        x0=0.4,
        y0=0.5,
    )
    frames = world.render_segment([scene], 24, cfg)
    assert frames.shape == (24, 48, 48, 3) and frames.dtype == np.uint8

    def centre(f):
        red = (f[..., 0] > 180) & (f[..., 1] < 80)
        ys, xs = np.nonzero(red)
        return xs.mean(), ys.mean()

    x0, y0 = centre(frames[0])
    x1, y1 = centre(frames[-1])
    assert x0 == pytest.approx(0.4 * 48, abs=1.0)
    assert x1 > x0 + 10 and abs(y1 - y0) < 1.0  # direction 0 is "right"


def test_clip_table_flags_cuts_and_joins_captions_with_then():
    cfg = WorldConfig(fps=6)
    scenes = world.make_scenes(np.random.default_rng(0), 60.0, cfg)
    frames = world.frame_table(scenes, 360, cfg)
    clips = world.clip_table(frames, 12)
    assert len(clips) == 30
    cut_times = [s.start_s for s in scenes[1:]]
    # Frames sit at 2t + k/6 s (k = 0..11): a cut shows in clip t if a later frame of it
    # belongs to the new scene.
    last = 2 - 1 / 6
    expect = [any(2 * t < c <= 2 * t + last + 1e-9 for c in cut_times) for t in range(30)]
    assert clips["scene_cut"].tolist() == expect
    for _, row in clips.iterrows():
        assert (". Then " in row["caption"]) == row["scene_cut"]
    assert frames["frame_class"].between(0, world.N_FRAME_CLASSES - 1).all()


def test_same_seed_same_frames():
    cfg = WorldConfig(height=32, width=32)
    a = world.render_segment(world.make_scenes(np.random.default_rng(5), 10, cfg), 60, cfg)
    b = world.render_segment(world.make_scenes(np.random.default_rng(5), 10, cfg), 60, cfg)
    c = world.render_segment(world.make_scenes(np.random.default_rng(6), 10, cfg), 60, cfg)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
