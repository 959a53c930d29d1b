"""`mvbench data prepare cc2017 ROOT`: the CC2017 release's movies as the loaders read them.

The release ships each segment's stimulus as `stimuli/<segment>.mp4` (8 minutes at 30 fps);
the loaders read `stimuli/<segment>.npy`, uint8 frames (F, H, W, 3) at `fps`, plus
`<segment>_clips.csv`, a row per TR. For every movie whose segment has fMRI runs:
- frames: the source frame shown at each time k / fps (k = 0, 1, ...), resized to
  size x size (the whole frame, as MinD-Video's 256 x 256 stimuli); exactly as many as the
  segment's runs have volumes x frames per TR (a movie shorter than its runs is refused; a few
  trailing seconds are dropped, and said);
- scene cuts: between consecutive source frames, the mean absolute difference of their grey
  levels (0-1, on frames scaled to 64 px wide) above `scene_cut_threshold` marks a cut. A TR
  whose 2 s contain a cut gets scene_cut = True; `scene` numbers the scenes (a TR belongs to the
  scene it starts in), so the report's paired tests resample whole scenes;
- captions (with a captioner, a transformers BLIP / BLIP-2 `save_pretrained` folder): one per
  TR, of its middle frame, greedy; without one no caption is written (never a made-up one);
- stimuli/stimuli.json: {"fps", "frames_per_tr"}, which the loaders check against the runs.
Each segment is written to temporary files and moved into place, then recorded in
stimuli/.prepared/<segment>.json with the settings and the movie's size and time: a run that is
killed loses at most the segment it was on, and running again does only what is missing
(captions too, when a captioner is given later).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from mindvideo.data.cc2017 import (
    SPLITS,
    STIMULI_META,
    list_subjects,
    open_subject,
    resolve_root,
)
from mindvideo.errors import ConfigError, DataError

Progress = Callable[[int, str], None]
DONE = ".prepared"  # stimuli/.prepared/<segment>.json: a segment written completely
CUT_WIDTH = 64  # scene-cut detection compares frames scaled to this width


class PrepareConfig(BaseModel):
    """How `mvbench data prepare` converts the release's movies (the profile's data.prepare)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(256, ge=8, le=4096, description="square side of the frames written, px")
    fps: float = Field(3.0, gt=0, le=240, description="frames kept per second (3: 6 per 2 s TR)")
    scene_cut_threshold: float = Field(
        0.1,
        gt=0,
        le=1,
        description="mean absolute grey-level change (0-1) between consecutive source frames "
        "above which a scene cut is marked",
    )
    caption_batch: int = Field(16, ge=1, le=1024, description="frames per captioner call")
    caption_tokens: int = Field(30, ge=1, le=512, description="most tokens per caption")


@dataclass
class Prepared:
    """What a prepare call did, for its summary."""

    written: list[str] = field(default_factory=list)
    captioned: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already done
    no_runs: list[str] = field(default_factory=list)  # a movie whose segment has no fMRI
    no_movie: list[str] = field(default_factory=list)  # fMRI whose segment has no movie
    trimmed: dict[str, float] = field(default_factory=dict)  # seconds of movie left over
    scene_cuts: dict[str, int] = field(default_factory=dict)
    fps: float = 0.0
    frames_per_tr: int = 0


def segment_volumes(root: Path) -> tuple[float, dict[str, int]]:
    """(TR, volumes per segment) over every subject's runs (headers only); segments must agree
    across subjects."""
    lengths: dict[str, dict[int, str]] = {}
    tr = None
    for subject in list_subjects(root):
        rec = open_subject(root, subject)
        tr, _ = rec.check()
        for split in SPLITS:
            for seg in rec.segments(split):
                n = rec.info(rec.runs[split][seg][0]).n_volumes
                lengths.setdefault(seg, {}).setdefault(n, subject)
    if tr is None:
        raise DataError(f"{root}: no subject*/fmri runs found; prepare aligns movies to them")
    out = {}
    for seg, by_length in lengths.items():
        if len(by_length) > 1:
            said = ", ".join(f"{s}: {n}" for n, s in by_length.items())
            raise DataError(
                f"{root}: segment {seg} has runs of different lengths across subjects ({said}); "
                "trim them to one length first"
            )
        out[seg] = next(iter(by_length))
    return tr, out


def frames_per_tr(cfg: PrepareConfig, tr: float) -> int:
    per = cfg.fps * tr
    if abs(per - round(per)) > 1e-6 or round(per) < 1:
        raise ConfigError(
            f"data.prepare.fps {cfg.fps:g} gives {per:g} frames per {tr:g} s TR; choose a rate "
            "that gives whole frames per TR (3 fps: 6)"
        )
    return round(per)


def _marker(folder: Path, segment: str) -> Path:
    return folder / DONE / f"{segment}.json"


def _record(movie: Path, cfg: PrepareConfig, n_volumes: int) -> dict:
    stat = movie.stat()
    return {
        "movie": movie.name,
        "bytes": stat.st_size,
        "mtime": int(stat.st_mtime),
        "size": cfg.size,
        "fps": cfg.fps,
        "scene_cut_threshold": cfg.scene_cut_threshold,
        "volumes": n_volumes,
    }


def decode_movie(
    movie: Path, cfg: PrepareConfig, n_frames: int, out: np.ndarray, tick: Progress
) -> tuple[list[float], float]:
    """Decode `movie` into `out` (n_frames, size, size, 3): the frame shown at each k / fps.
    Returns (the times of scene cuts, seconds of movie past the last frame kept)."""
    import av

    k, cuts, previous, last_time = 0, [], None, 0.0
    try:
        with av.open(str(movie)) as container:
            stream = container.streams.video[0]
            height = max(1, round(CUT_WIDTH * stream.height / max(stream.width, 1)))
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                last_time = t
                grey = frame.reformat(width=CUT_WIDTH, height=height, format="gray")
                grey = grey.to_ndarray().astype(np.float32) / 255.0
                change = np.abs(grey - previous).mean() if previous is not None else 0.0
                if change > cfg.scene_cut_threshold:
                    cuts.append(t)
                previous = grey
                while k < n_frames and t + 1e-6 >= k / cfg.fps:
                    rgb = frame.reformat(width=cfg.size, height=cfg.size, format="rgb24")
                    out[k] = rgb.to_ndarray()
                    k += 1
                    if k % 60 == 0:
                        tick(0, f"{movie.stem} {k}/{n_frames} frames")
    except av.error.FFmpegError as e:
        raise DataError(f"{movie}: cannot decode ({type(e).__name__}: {e})") from None
    if k < n_frames:
        raise DataError(
            f"{movie}: the movie gives {k} frames at {cfg.fps:g} fps ({last_time:.1f} s) but its "
            f"fMRI runs need {n_frames} ({n_frames / cfg.fps:.1f} s); is it the movie of this "
            "segment, and complete?"
        )
    return cuts, max(0.0, last_time - (n_frames - 1) / cfg.fps)


def clip_table(cuts: list[float], n_volumes: int, tr: float) -> pd.DataFrame:
    """A row per TR: scene_cut (a cut inside its 2 s) and scene (numbered from 0)."""
    starts = np.arange(n_volumes) * tr
    cuts_arr = np.asarray(cuts, dtype=np.float64)
    inside = [bool(((cuts_arr > s) & (cuts_arr < s + tr)).any()) for s in starts]
    scene = np.searchsorted(np.sort(cuts_arr), starts, side="right")
    return pd.DataFrame({"clip": np.arange(n_volumes), "scene_cut": inside, "scene": scene})


def prepare_cc2017(
    root: Path,
    cfg: PrepareConfig,
    captioner: Path | None = None,
    progress: Progress | None = None,
    device: str = "cpu",
) -> Prepared:
    """Write the loaders' stimuli from the release's movies under `root` (module docstring)."""
    tick = progress or (lambda n, what: None)
    root = resolve_root(Path(root))
    folder = root / "stimuli"
    if not folder.is_dir():
        raise DataError(f"{root}: no stimuli/ folder (the release's stimuli/seg1.mp4 ...)")
    tr, volumes = segment_volumes(root)
    per_tr = frames_per_tr(cfg, tr)
    movies = {p.stem: p for p in sorted(folder.glob("*.mp4"))}
    done = Prepared(fps=cfg.fps, frames_per_tr=per_tr)
    done.no_runs = sorted(set(movies) - set(volumes))
    done.no_movie = sorted(set(volumes) - set(movies))
    meta = {"fps": cfg.fps, "frames_per_tr": per_tr}
    meta_path = folder / STIMULI_META
    if meta_path.exists() and json.loads(meta_path.read_text()) != meta:
        old = json.loads(meta_path.read_text())
        raise DataError(
            f"{meta_path}: the stimuli were prepared at {old}, this call asks for {meta}; "
            "prepare into a copy of the release, or remove stimuli/*.npy, *_clips.csv, "
            f"{STIMULI_META} and .prepared/ to start again"
        )
    (folder / DONE).mkdir(exist_ok=True)
    model = load_captioner(captioner, device) if captioner is not None else None
    for seg in sorted(set(movies) & set(volumes)):
        movie, n_volumes = movies[seg], volumes[seg]
        record = _record(movie, cfg, n_volumes)
        marker = _marker(folder, seg)
        previous = json.loads(marker.read_text()) if marker.exists() else None
        frames_done = (
            previous is not None
            and {k: v for k, v in previous.items() if k != "captioner"} == record
        )
        if not frames_done:
            n_frames = n_volumes * per_tr
            tmp, csv_tmp = folder / f".{seg}.npy.tmp", folder / f".{seg}_clips.csv.tmp"
            try:
                out = np.lib.format.open_memmap(
                    tmp, mode="w+", dtype=np.uint8, shape=(n_frames, cfg.size, cfg.size, 3)
                )
                cuts, left = decode_movie(movie, cfg, n_frames, out, tick)
                out.flush()
                del out
                clip_table(cuts, n_volumes, tr).to_csv(csv_tmp, index=False)
            except BaseException:
                tmp.unlink(missing_ok=True)  # the segments already prepared stay as they are
                csv_tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, folder / f"{seg}.npy")
            os.replace(csv_tmp, folder / f"{seg}_clips.csv")
            marker.write_text(json.dumps(record, indent=1) + "\n")
            done.written.append(seg)
            done.scene_cuts[seg] = len(cuts)
            if left > 1.0:
                done.trimmed[seg] = round(left, 1)
            previous = record
        if model is not None and previous.get("captioner") != str(captioner):
            table = pd.read_csv(folder / f"{seg}_clips.csv")
            table["caption"] = caption_segment(model, folder / f"{seg}.npy", per_tr, cfg, tick)
            csv_tmp = folder / f".{seg}_clips.csv.tmp"
            table.to_csv(csv_tmp, index=False)
            os.replace(csv_tmp, folder / f"{seg}_clips.csv")
            marker.write_text(json.dumps(previous | {"captioner": str(captioner)}, indent=1) + "\n")
            done.captioned.append(seg)
        if frames_done and seg not in done.captioned:
            done.skipped.append(seg)
        tick(1, seg)
    meta_path.write_text(json.dumps(meta) + "\n")
    return done


@dataclass
class Captioner:
    processor: object
    model: object
    device: str


def load_captioner(folder: Path, device: str = "cpu") -> Captioner:
    """A BLIP or BLIP-2 image-captioning model saved with `save_pretrained` (its processor
    beside it); a folder that is not one is refused by name, before any work."""
    folder = Path(folder)
    config = folder / "config.json"
    if not config.is_file():
        raise ConfigError(
            f"--captioner {folder}: no config.json; give a folder written by save_pretrained "
            "(e.g. Salesforce/blip-image-captioning-large, model and processor, saved locally)"
        )
    try:
        kind = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{config}: not a JSON config ({e})") from None
    from transformers import (
        AutoProcessor,
        Blip2ForConditionalGeneration,
        BlipForConditionalGeneration,
    )

    classes = {"blip": BlipForConditionalGeneration, "blip-2": Blip2ForConditionalGeneration}
    if kind not in classes:
        raise ConfigError(
            f"--captioner {folder}: model_type {kind!r}; prepare captions with an image "
            f"captioner of type {' or '.join(classes)} (BLIP, BLIP-2)"
        )
    try:
        processor = AutoProcessor.from_pretrained(folder)
        model = classes[kind].from_pretrained(folder).to(device).eval()
    except Exception as e:
        raise ConfigError(
            f"--captioner {folder}: cannot load it ({type(e).__name__}: {e}); it needs the "
            "model's weights and its processor (save both with save_pretrained)"
        ) from None
    return Captioner(processor, model, device)


def caption_segment(
    captioner: Captioner, frames_path: Path, per_tr: int, cfg: PrepareConfig, tick: Progress
) -> list[str]:
    """A caption per TR: of its middle frame, greedy decoding."""
    import torch
    from PIL import Image

    frames = np.load(frames_path, mmap_mode="r")
    middle = np.arange(len(frames) // per_tr) * per_tr + per_tr // 2
    captions: list[str] = []
    for start in range(0, len(middle), cfg.caption_batch):
        chosen = middle[start : start + cfg.caption_batch]
        batch = [Image.fromarray(np.asarray(frames[i])) for i in chosen]
        inputs = captioner.processor(images=batch, return_tensors="pt").to(captioner.device)
        with torch.no_grad():
            ids = captioner.model.generate(
                **inputs, max_new_tokens=cfg.caption_tokens, do_sample=False, num_beams=1
            )
        texts = captioner.processor.batch_decode(ids, skip_special_tokens=True)
        captions += [t.strip() for t in texts]
        tick(0, f"{frames_path.stem} captions {len(captions)}/{len(middle)}")
    return captions
