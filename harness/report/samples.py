"""Sample sheets: ground-truth frames above each variant's reconstructions, and per-clip GIFs."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mindvideo.eval.video_io import write_clip_set

SEPARATOR = 2  # px of white between frames, rows and around the sheet
BLOCK_GAP = 8  # px of extra white between samples
NAME_HEIGHT = 14  # px of the sample-name line above a block
LABEL_PAD = 6  # px left and right of the row labels
TRUTH_LABEL = "ground truth"
BACKGROUND, INK = (255, 255, 255), (0, 0, 0)


@functools.cache
def _font():
    """PIL's default font, loaded once (loading it costs milliseconds per call)."""
    return ImageFont.load_default()


def label_width(labels: list[str]) -> int:
    """Width in px of the label column: the widest label in PIL's default font, padded."""
    font = _font()
    return max(math.ceil(font.getlength(label)) for label in labels) + 2 * LABEL_PAD


def _check_clips(name: str, clips: np.ndarray, samples: int, frames: int) -> None:
    if clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"{name}: expected (samples, frames, H, W, 3) uint8, got {clips.shape}")
    if clips.shape[:2] != (samples, frames):
        raise ValueError(
            f"{name}: {clips.shape[0]} samples x {clips.shape[1]} frames, but the ground truth "
            f"has {samples} x {frames}; pass reconstructions of the same test clips"
        )


def contact_sheet(
    truth: np.ndarray,
    rows: dict[str, np.ndarray],
    path: Path,
    names: list[str] | None = None,
    scale: int = 2,
    compress_level: int = 6,
) -> Path:
    """One PNG: per sample, the ground-truth frames then one row per label, frames left to right.

    truth: (K, F, H, W, 3) uint8; each rows[label]: (K, F, h, w, 3), resized to (H, W) with
    nearest neighbour. Pixels are enlarged `scale` times (nearest) so small frames stay legible.
    """
    truth = np.asarray(truth)
    if truth.ndim != 5 or truth.shape[-1] != 3:
        raise ValueError(f"ground truth: expected (samples, frames, H, W, 3), got {truth.shape}")
    samples, frames, height, width = truth.shape[:4]
    for label, clips in rows.items():
        _check_clips(label, np.asarray(clips), samples, frames)
    if names is not None and len(names) != samples:
        raise ValueError(f"{len(names)} sample names for {samples} samples")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")

    labels = [TRUTH_LABEL, *rows]
    tile_w, tile_h = width * scale, height * scale
    left = label_width(labels)
    name_h = NAME_HEIGHT if names is not None else 0
    block_h = name_h + len(labels) * tile_h + (len(labels) + 1) * SEPARATOR
    sheet_w = left + frames * tile_w + (frames + 1) * SEPARATOR
    sheet_h = samples * block_h + (samples - 1) * BLOCK_GAP
    sheet = Image.new("RGB", (sheet_w, sheet_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()

    for k in range(samples):
        top = k * (block_h + BLOCK_GAP)
        if names is not None:
            draw.text((left + SEPARATOR, top), str(names[k]), fill=INK, font=font)
        for r, label in enumerate(labels):
            clips = truth if r == 0 else np.asarray(rows[label])
            y = top + name_h + SEPARATOR + r * (tile_h + SEPARATOR)
            _, text_top, _, text_bottom = draw.textbbox((0, 0), label, font=font)
            text_y = y + (tile_h - (text_bottom - text_top)) // 2 - text_top  # centred on the row
            draw.text((LABEL_PAD, text_y), label, fill=INK, font=font)
            for f in range(frames):
                frame = Image.fromarray(np.ascontiguousarray(clips[k, f], dtype=np.uint8))
                tile = frame.resize((tile_w, tile_h), Image.Resampling.NEAREST)
                sheet.paste(tile, (left + SEPARATOR + f * (tile_w + SEPARATOR), y))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, compress_level=compress_level)  # PNG zlib level: 1 is fast, 9 small
    return path


def write_gifs(clips: np.ndarray, names: list[str], folder: Path, fps: float) -> list[Path]:
    """One GIF per clip, folder/<name>.gif; clips (N, F, H, W, 3) uint8."""
    write_clip_set(folder, names, clips, fmt="gif", fps=fps)
    return [Path(folder) / f"{name}.gif" for name in names]
