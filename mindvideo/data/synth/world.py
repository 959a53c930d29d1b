"""The SynthCC stimulus world: scenes of one textured object moving over a background.

A segment is a continuous video made of scenes (2-8 s each). Every frame carries a class
label (shape x colour), every clip of one TR a video label (shape x motion direction) and
a caption. Scene cuts are recorded so that clips spanning a cut can be flagged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from mindvideo.data.cc2017 import clip_frame_offsets
from mindvideo.data.synth.config import WorldConfig

SHAPES = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "pentagon",
    "hexagon",
    "star",
    "cross",
    "ring",
    "crescent",
)
COLOURS = {
    "red": (0.86, 0.16, 0.16),
    "orange": (0.95, 0.55, 0.12),
    "yellow": (0.92, 0.86, 0.20),
    "green": (0.20, 0.72, 0.28),
    "cyan": (0.16, 0.80, 0.84),
    "blue": (0.16, 0.32, 0.88),
    "purple": (0.60, 0.24, 0.80),
    "white": (0.95, 0.95, 0.95),
}
COLOUR_NAMES = tuple(COLOURS)
# Direction k points at angle 45 * k degrees, counter-clockwise from "right".
DIRECTIONS = (
    "right",
    "up and right",
    "up",
    "up and left",
    "left",
    "down and left",
    "down",
    "down and right",
)
BACKGROUNDS = ("plain", "stripes", "checkers", "noise", "gradient")
BACKGROUND_WORDS = {
    "plain": "a plain background",
    "stripes": "stripes",
    "checkers": "checkers",
    "noise": "noise",
    "gradient": "a gradient",
}
TEXTURES = ("solid", "striped", "dotted")

N_FRAME_CLASSES = len(SHAPES) * len(COLOURS)
N_VIDEO_CLASSES = len(SHAPES) * len(DIRECTIONS)


def frame_class(shape: int, colour: int) -> int:
    """Frame label: shape x colour (80 classes)."""
    return shape * len(COLOURS) + colour


def video_class(shape: int, direction: int) -> int:
    """Clip label: shape x motion direction (80 classes)."""
    return shape * len(DIRECTIONS) + direction


def class_names() -> dict[str, list[str]]:
    """Human-readable names of the frame and video classes, indexed by label."""
    frame = [f"{c} {s}" for s in SHAPES for c in COLOUR_NAMES]
    video = [f"{s} moving {d}" for s in SHAPES for d in DIRECTIONS]
    return {"frame": frame, "video": video}


@dataclass(frozen=True)
class Scene:
    """One shot: an object with fixed attributes moving in a straight line."""

    start_s: float
    duration_s: float
    shape: int
    colour: int
    direction: int
    speed: float  # frame widths per second
    size: float  # radius, fraction of the frame's shorter side
    texture: int
    background: int
    background_seed: int
    x0: float  # start centre, in units of the shorter side
    y0: float

    def caption(self, world: WorldConfig) -> str:
        lo, hi = world.size_range
        size_word = "small" if self.size < (lo + hi) / 2 else "large"
        slo, shi = world.speed_range
        speed_word = "slowly" if self.speed < (slo + shi) / 2 else "quickly"
        texture = TEXTURES[self.texture]
        texture_word = "" if texture == "solid" else f"{texture} "
        return (
            f"a {size_word} {texture_word}{COLOUR_NAMES[self.colour]} {SHAPES[self.shape]} "
            f"moves {DIRECTIONS[self.direction]} {speed_word} over "
            f"{BACKGROUND_WORDS[BACKGROUNDS[self.background]]}"
        )


def make_scenes(rng: np.random.Generator, duration_s: float, world: WorldConfig) -> list[Scene]:
    """Draw consecutive scenes covering `duration_s`; the last one is cut at the end."""
    aspect_w = world.width / min(world.height, world.width)
    aspect_h = world.height / min(world.height, world.width)
    scenes: list[Scene] = []
    t = 0.0
    prev: tuple[int, int] | None = None
    while t < duration_s - 1e-9:
        dur = float(rng.uniform(world.scene_min_s, world.scene_max_s))
        dur = min(dur, duration_s - t)
        # A cut must be visible: the next object differs in shape or colour.
        while True:
            shape = int(rng.integers(len(SHAPES)))
            colour = int(rng.integers(len(COLOURS)))
            if (shape, colour) != prev:
                break
        prev = (shape, colour)
        direction = int(rng.integers(len(DIRECTIONS)))
        speed = float(rng.uniform(*world.speed_range))
        size = float(rng.uniform(*world.size_range))
        angle = math.radians(45.0 * direction)
        dx, dy = math.cos(angle), -math.sin(angle)
        if world.motion == "wrap":  # v2: the drawn speed for the whole scene, from anywhere
            x0, y0 = float(rng.uniform(0, aspect_w)), float(rng.uniform(0, aspect_h))
        else:  # v1: keep the path inside the frame, at most 60% of the width travelled
            travel = min(speed * aspect_w * dur, 0.6 * min(aspect_w, aspect_h))
            cx = aspect_w / 2 + rng.uniform(-0.08, 0.08)
            cy = aspect_h / 2 + rng.uniform(-0.08, 0.08)
            speed = travel / (aspect_w * dur)
            x0, y0 = cx - dx * travel / 2, cy - dy * travel / 2
        scenes.append(
            Scene(
                start_s=t,
                duration_s=dur,
                shape=shape,
                colour=colour,
                direction=direction,
                speed=speed,
                size=size,
                texture=int(rng.integers(len(TEXTURES))),
                background=int(rng.integers(len(BACKGROUNDS))),
                background_seed=int(rng.integers(2**31 - 1)),
                x0=x0,
                y0=y0,
            )
        )
        t += dur
    return scenes


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (approximate outside) to the shape, in units of its radius."""
    rho = np.sqrt(u * u + v * v)
    if shape == "circle":
        return rho - 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8
    if shape == "diamond":
        return (np.abs(u) + np.abs(v)) / math.sqrt(2) - 0.72
    if shape in ("triangle", "pentagon", "hexagon"):
        n = {"triangle": 3, "pentagon": 5, "hexagon": 6}[shape]
        phi = np.arctan2(-v, u) - math.pi / 2  # one vertex points up
        sector = np.mod(phi, 2 * math.pi / n) - math.pi / n
        return rho * np.cos(sector) - math.cos(math.pi / n)
    if shape == "star":
        phi = np.arctan2(-v, u) - math.pi / 2
        s = np.mod(phi, 2 * math.pi / 5) / (2 * math.pi / 5)
        radius = 0.45 + 0.55 * np.abs(2 * s - 1)
        return rho - radius
    if shape == "cross":
        bar_h = np.maximum(np.abs(u) - 0.95, np.abs(v) - 0.32)
        bar_v = np.maximum(np.abs(u) - 0.32, np.abs(v) - 0.95)
        return np.minimum(bar_h, bar_v)
    if shape == "ring":
        return np.abs(rho - 0.72) - 0.28
    if shape == "crescent":
        bite = np.sqrt((u - 0.45) ** 2 + v * v) - 0.8
        return np.maximum(rho - 1.0, -bite)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Brightness factor inside the object, in the object's own coordinates (moves with it)."""
    if texture == "solid":
        return np.ones_like(u)
    if texture == "striped":
        return np.where(np.sin(2 * math.pi * 2.5 * (u + v)) > 0, 1.0, 0.55)
    if texture == "dotted":
        fu = np.mod(u * 2.5, 1.0) - 0.5
        fv = np.mod(v * 2.5, 1.0) - 0.5
        return np.where(fu * fu + fv * fv < 0.06, 0.45, 1.0)
    raise ValueError(f"unknown texture {texture!r}")


def _background(scene: Scene, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A static, dim background for one scene: (H, W, 3) floats in [0, 1]."""
    rng = np.random.default_rng(scene.background_seed)
    kind = BACKGROUNDS[scene.background]
    grey = rng.uniform(0.12, 0.32)
    tint = rng.uniform(-0.04, 0.04, size=3)
    angle = rng.uniform(0, math.pi)
    along = x * math.cos(angle) + y * math.sin(angle)
    if kind == "plain":
        level = np.full_like(x, grey)
    elif kind == "stripes":
        freq = rng.uniform(3, 6)
        level = grey + 0.10 * np.sign(np.sin(2 * math.pi * freq * along + rng.uniform(0, 6.3)))
    elif kind == "checkers":
        freq = rng.uniform(3, 5)
        level = grey + 0.10 * ((np.floor(x * freq) + np.floor(y * freq)) % 2 * 2 - 1)
    elif kind == "noise":
        field = gaussian_filter(rng.standard_normal(x.shape), sigma=max(1.0, x.shape[0] / 24))
        level = grey + 0.12 * field / (field.std() + 1e-9)
    else:  # gradient
        span = along.max() - along.min() + 1e-9
        level = grey - 0.1 + 0.25 * (along - along.min()) / span
    return np.clip(level[..., None] + tint, 0.0, 1.0)


def render_segment(scenes: list[Scene], n_frames: int, world: WorldConfig) -> np.ndarray:
    """Render a segment at `world.fps`: uint8 frames of shape (n_frames, H, W, 3)."""
    h, w = world.height, world.width
    unit = min(h, w)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x = (x + 0.5) / unit
    y = (y + 0.5) / unit
    out = np.empty((n_frames, h, w, 3), dtype=np.uint8)
    times = np.arange(n_frames) / world.fps
    for scene in scenes:
        sel = np.nonzero(
            (times >= scene.start_s - 1e-9) & (times < scene.start_s + scene.duration_s - 1e-9)
        )[0]
        if sel.size == 0:
            continue
        dt = times[sel] - scene.start_s  # (f,)
        angle = math.radians(45.0 * scene.direction)
        step = scene.speed * (w / unit)
        cx = (scene.x0 + math.cos(angle) * step * dt).astype(np.float32)
        cy = (scene.y0 - math.sin(angle) * step * dt).astype(np.float32)
        ox = x[None] - cx[:, None, None]  # (f, H, W): offsets from the object's centre
        oy = y[None] - cy[:, None, None]
        if world.motion == "wrap":  # the nearest copy on the torus: drawn across the edges
            ox -= np.float32(w / unit) * np.round(ox / np.float32(w / unit))
            oy -= np.float32(h / unit) * np.round(oy / np.float32(h / unit))
        u = ox / scene.size
        v = oy / scene.size
        dist_px = _shape_distance(SHAPES[scene.shape], u, v) * scene.size * unit
        alpha = np.clip(0.5 - dist_px, 0.0, 1.0)[..., None]  # antialiased edge
        shade = _texture(TEXTURES[scene.texture], u, v)[..., None]
        colour = np.asarray(COLOURS[COLOUR_NAMES[scene.colour]], dtype=np.float32)
        fg = shade * colour  # (f, H, W, 3)
        bg = _background(scene, x, y).astype(np.float32)[None]
        frames = alpha * fg + (1 - alpha) * bg
        out[sel] = np.round(np.clip(frames, 0, 1) * 255).astype(np.uint8)
    return out


def frame_table(scenes: list[Scene], n_frames: int, world: WorldConfig) -> pd.DataFrame:
    """One row per rendered frame: its scene, attributes, labels and caption."""
    times = np.arange(n_frames) / world.fps
    starts = np.array([s.start_s for s in scenes])
    idx = np.searchsorted(starts, times + 1e-9, side="right") - 1
    rows = []
    w_unit = world.width / min(world.height, world.width)
    h_unit = world.height / min(world.height, world.width)
    for k, (t, i) in enumerate(zip(times, idx, strict=True)):
        s = scenes[i]
        dt = t - s.start_s
        angle = math.radians(45.0 * s.direction)
        x = s.x0 + math.cos(angle) * s.speed * w_unit * dt
        y = s.y0 - math.sin(angle) * s.speed * w_unit * dt
        if world.motion == "wrap":
            x, y = x % w_unit, y % h_unit
        rows.append(
            {
                "frame": k,
                "time_s": round(float(t), 6),
                "scene": int(i),
                "shape": SHAPES[s.shape],
                "colour": COLOUR_NAMES[s.colour],
                "direction": DIRECTIONS[s.direction],
                "texture": TEXTURES[s.texture],
                "background": BACKGROUNDS[s.background],
                "speed": s.speed,
                "size": s.size,
                "x": x,
                "y": y,
                "frame_class": frame_class(s.shape, s.colour),
                "video_class": video_class(s.shape, s.direction),
                "caption": s.caption(world),
            }
        )
    return pd.DataFrame(rows)


def clip_table(frames: pd.DataFrame, frames_per_clip: int) -> pd.DataFrame:
    """One row per clip (one TR): majority scene's video label, scene-cut flag, caption.

    A clip spanning a cut gets both captions joined by "Then", as MinD-Video's
    contrastive stage expects.
    """
    n_clips = len(frames) // frames_per_clip
    rows = []
    for t in range(n_clips):
        part = frames.iloc[t * frames_per_clip : (t + 1) * frames_per_clip]
        scenes = list(dict.fromkeys(part["scene"].tolist()))
        counts = part["scene"].value_counts()
        major = int(counts.index[0])
        major_rows = part[part["scene"] == major]
        captions = [part[part["scene"] == s]["caption"].iloc[0] for s in scenes]
        rows.append(
            {
                "clip": t,
                "start_frame": t * frames_per_clip,
                "scene": major,
                "scene_cut": len(scenes) > 1,
                "video_class": int(major_rows["video_class"].iloc[0]),
                "frame_class": int(major_rows["frame_class"].iloc[0]),
                "shape": major_rows["shape"].iloc[0],
                "colour": major_rows["colour"].iloc[0],
                "direction": major_rows["direction"].iloc[0],
                "caption": ". Then ".join(captions),
            }
        )
    return pd.DataFrame(rows)


def scenes_table(scenes: list[Scene]) -> pd.DataFrame:
    """The scene list itself (start, duration and raw attributes)."""
    return pd.DataFrame([asdict(s) for s in scenes])


def sample_clips(
    rng: np.random.Generator,
    n_clips: int,
    tr: float,
    frames_per_clip: int,
    world: WorldConfig,
    clips_per_segment: int = 10,
):
    """Fresh clips of the stimulus world, drawn as the simulator draws its segments (scenes of
    2-8 s cut into TRs, a clip over a cut captioned "... Then ..."), without any brain: yields
    (frames (k, frames_per_clip, H, W, 3) uint8, k captions) one segment at a time, n_clips in
    all. The frames of a clip are spaced as `Stimuli.clip` spaces them."""
    per_tr = round(world.fps * tr)
    if abs(per_tr - world.fps * tr) > 1e-6 or not 1 <= frames_per_clip <= per_tr:
        raise ValueError(
            f"{frames_per_clip} frames per clip from {world.fps} fps x {tr} s TRs: the TR must "
            f"hold a whole number of frames, at least frames_per_clip"
        )
    offsets = clip_frame_offsets(frames_per_clip, per_tr)
    left = n_clips
    while left > 0:
        k = min(clips_per_segment, left)
        scenes = make_scenes(rng, k * tr, world)
        frames = render_segment(scenes, k * per_tr, world)  # (k * per_tr, H, W, 3)
        captions = clip_table(frame_table(scenes, k * per_tr, world), per_tr)["caption"]
        starts = np.arange(k)[:, None] * per_tr
        yield frames[starts + offsets[None]], list(captions)
        left -= k
