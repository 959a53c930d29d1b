import numpy as np
import pytest

from mindvideo.data.synth import world
from mindvideo.data.synth.config import WorldConfig


def _red_circle_moving_right(speed: float, x0: float) -> world.Scene:
    """A 4 s scene of one red circle at mid-height, starting at x0 (fraction of the width)."""
    return world.Scene(
        start_s=0,
        duration_s=4,
        shape=world.SHAPES.index("circle"),
        colour=world.COLOUR_NAMES.index("red"),
        direction=0,  # right
        speed=speed,
        size=0.2,
        texture=0,
        background=0,
        background_seed=1,
        x0=x0,
        y0=0.5,
    )


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
    scene = _red_circle_moving_right(speed=0.1, x0=0.4)
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


# SynthCC v2's motion (issue 28): fast objects that wrap around the frame ---------------------


def _v2(**world):
    from mindvideo.data.synth.config import SimulateConfig

    return SimulateConfig.model_validate({"version": 2, "world": world}).world


def test_version_2_takes_the_v2_world_for_fields_not_given():
    from mindvideo.data.synth.config import V2_WORLD, SimulateConfig

    v1 = SimulateConfig().world
    assert (v1.speed_range, v1.motion) == ((0.04, 0.14), "capped")
    v2 = _v2(height=64, width=64)
    assert (v2.speed_range, v2.motion) == (V2_WORLD["speed_range"], "wrap")
    assert _v2(speed_range=(0.3, 0.4)).speed_range == (0.3, 0.4)  # given: kept
    assert SimulateConfig(version=2, world=WorldConfig(height=32)).world.motion == "wrap"


def test_the_v2_rule_follows_from_the_stand_ins_resolution():
    # >= one latent pixel (4 px of 64, factor-4 autoencoder) per scored frame (6 per 2 s TR),
    # and < the smallest radius per scored frame, so consecutive scored frames overlap
    v2, scored_fps = _v2(), 6 / 2.0
    lo, hi = v2.speed_range
    assert lo * v2.width / scored_fps >= v2.width / 16
    assert hi * v2.width / scored_fps < v2.size_range[0] * v2.width


def test_v2_scenes_keep_their_drawn_speed_and_wrap_around_the_frame():
    cfg = _v2()
    scenes = world.make_scenes(np.random.default_rng(4), 600.0, cfg)
    speeds = np.array([s.speed for s in scenes])
    assert speeds.min() >= 0.2 and speeds.max() <= 0.5  # no travel cap slows them
    table = world.frame_table(scenes, 600 * cfg.fps, cfg)
    assert table["x"].between(0, 1).all() and table["y"].between(0, 1).all()
    scored = table.iloc[::2]  # 3 scored frames a second of the 6 rendered
    same = scored["scene"].to_numpy()[1:] == scored["scene"].to_numpy()[:-1]
    d = np.diff(scored[["x", "y"]].to_numpy(), axis=0)
    d -= np.round(d)  # across the edge: the short way
    px = np.hypot(d[:, 0], d[:, 1])[same] * cfg.width
    assert px.min() >= 4.0 - 1e-6 and px.max() < cfg.size_range[0] * cfg.width


def test_a_v2_object_leaving_the_frame_comes_back_on_the_other_side():
    cfg = _v2(height=48, width=48, fps=6)
    scene = _red_circle_moving_right(speed=0.5, x0=0.9)
    frames = world.render_segment([scene], 24, cfg)
    red = (frames[..., 0] > 180) & (frames[..., 1] < 80)
    assert red[0, :, :5].any() and red[0, :, -5:].any()  # across the right edge at the start
    assert red[6, :, :24].sum() > red[6, :, 24:].sum()  # a second later: on the left side
    assert red.sum(axis=(1, 2)).min() > 0.8 * red[0].sum()  # never cut off
