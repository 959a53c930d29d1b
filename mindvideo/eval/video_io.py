"""Reading and writing clips as GIF, MP4, PNG frame folders or npy, named per sample.

A clip set is a folder. Each sample is one of
    <name>.gif, <name>.mp4, <name>/ holding frame images (*.png, *.jpg, sorted by name),
    <name>.npy holding (F, H, W, 3) uint8,
or the whole set is one `clips.npy` of shape (n, F, H, W, 3) with optional `names.txt`
(one name per line; default 0000, 0001, ...). Names pair predictions with ground truth.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from mindvideo.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
CLIP_SUFFIXES = (".gif", ".mp4", ".npy")


def _rgb(frame: np.ndarray, path: Path) -> np.ndarray:
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
        raise DataError(f"{path}: frames must be RGB images, got shape {frame.shape}")
    return np.ascontiguousarray(frame[..., :3])


def read_gif(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
    except Exception as e:
        raise DataError(f"{path}: cannot read GIF ({type(e).__name__}: {e})") from None
    return np.stack(frames)


def read_mp4(path: Path) -> np.ndarray:
    import av

    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except Exception as e:
        raise DataError(f"{path}: cannot read video ({type(e).__name__}: {e})") from None
    if not frames:
        raise DataError(f"{path}: the video has no frames")
    return np.stack(frames)


def read_frame_folder(path: Path) -> np.ndarray:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no frame images (*.png, *.jpg) in this clip folder")
    frames = []
    for f in files:
        try:
            with Image.open(f) as im:
                frames.append(_rgb(np.asarray(im.convert("RGB")), f))
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{f}: cannot read image ({type(e).__name__}: {e})") from None
    shapes = {fr.shape for fr in frames}
    if len(shapes) > 1:
        raise DataError(f"{path}: frames differ in size ({sorted(shapes)}); resize them alike")
    return np.stack(frames)


def read_npy_clip(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise DataError(f"{path}: a clip must have shape (frames, H, W, 3), got {arr.shape}")
    return _to_uint8(arr, path)


def _to_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: NaN/Inf pixel values")
        top = float(arr.max()) if arr.size else 0.0
        scale = 255.0 if top <= 1.0 + 1e-6 else 1.0  # [0, 1] floats or [0, 255] floats
        return np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise DataError(f"{path}: integer pixels must be within 0..255")
        return arr.astype(np.uint8)
    raise DataError(f"{path}: unsupported pixel dtype {arr.dtype}")


def read_clip(path: Path) -> np.ndarray:
    """One clip (F, H, W, 3) uint8 from a .gif, .mp4, .npy or a folder of frame images."""
    if path.is_dir():
        return read_frame_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return read_gif(path)
    if suffix == ".mp4":
        return read_mp4(path)
    if suffix == ".npy":
        return read_npy_clip(path)
    raise DataError(f"{path}: unsupported clip format; use .gif, .mp4, .npy or a frame folder")


def list_clips(folder: Path) -> dict[str, Path]:
    """Sample name -> clip path for a folder of per-sample clips."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() or p.suffix.lower() in CLIP_SUFFIXES:
            name = p.name if p.is_dir() else p.stem
            if name in found:
                raise DataError(
                    f"{folder}: sample {name!r} appears twice ({found[name].name}, {p.name}); "
                    "keep one file per sample"
                )
            found[name] = p
    return found


def read_clip_set(folder: Path) -> tuple[list[str], list[np.ndarray]]:
    """All clips of a folder: (names, clips). A single clips.npy holds the whole set."""
    folder = Path(folder)
    bundle = folder / "clips.npy"
    if bundle.exists():
        try:
            arr = np.load(bundle, mmap_mode="r", allow_pickle=False)
        except Exception as e:
            raise DataError(f"{bundle}: cannot read ({type(e).__name__}: {e})") from None
        if arr.ndim != 5 or arr.shape[-1] != 3:
            raise DataError(f"{bundle}: expected (n, frames, H, W, 3), got {arr.shape}")
        names_file = folder / "names.txt"
        if names_file.exists():
            names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
            if len(names) != arr.shape[0]:
                raise DataError(f"{names_file}: {len(names)} names for {arr.shape[0]} clips")
        else:
            names = [f"{i:04d}" for i in range(arr.shape[0])]
        return names, [_to_uint8(np.asarray(a), bundle) for a in arr]
    paths = list_clips(folder)
    if not paths:
        raise DataError(
            f"{folder}: no clips (.gif, .mp4, .npy, frame folders or a clips.npy) found"
        )
    return list(paths), [read_clip(p) for p in paths.values()]


def _spans(keep: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def split_side_by_side(
    clip: np.ndarray, path: Path, panels: int = 2, tolerance: float = 2.0
) -> list[np.ndarray]:
    """The `panels` clips laid side by side in `clip` (F, H, W, 3), left to right, as released
    reconstructions show them (ground truth | reconstruction). Padding is detected, not
    assumed: a column or row whose pixels are one colour in every frame (std <= `tolerance`,
    allowing for GIF palettes) is padding; the content columns must form `panels` runs of one
    width, and without padding columns the width must split evenly."""
    frames = np.asarray(clip, dtype=np.float32)
    flat_cols = frames.transpose(2, 0, 1, 3).reshape(frames.shape[2], -1)  # (W, F*H*3)
    flat_rows = frames.transpose(1, 0, 2, 3).reshape(frames.shape[1], -1)
    content_cols = flat_cols.std(axis=1) > tolerance
    content_rows = flat_rows.std(axis=1) > tolerance
    rows = _spans(content_rows)
    if not rows:
        raise DataError(f"{path}: every row is one colour: no panel to read")
    top, bottom = rows[0][0], rows[-1][1]  # outer padding off; inner uniform rows stay
    cols = _spans(content_cols)
    while len(cols) > panels:  # uniform stripes inside a panel: close the narrowest gaps first
        gaps = [cols[i + 1][0] - cols[i][1] for i in range(len(cols) - 1)]
        i = int(np.argmin(gaps))
        cols[i : i + 2] = [(cols[i][0], cols[i + 1][1])]
    if len(cols) != panels:
        # no padding between the panels: split the content evenly, where it does
        left, right = (cols[0][0], cols[-1][1]) if cols else (0, frames.shape[2])
        width = right - left
        if width % panels:
            found = ", ".join(f"{a}-{b}" for a, b in cols) or "none"
            raise DataError(
                f"{path}: cannot find {panels} side-by-side panels: content columns {found} of "
                f"{frames.shape[2]}, and {width} columns do not split into {panels} equal panels; "
                "crop the clips yourself and score them with --pred / --truth"
            )
        step = width // panels
        cols = [(left + i * step, left + (i + 1) * step) for i in range(panels)]
    widths = {b - a for a, b in cols}
    if len(widths) > 1:
        found = ", ".join(f"{a}-{b}" for a, b in cols)
        raise DataError(
            f"{path}: the {panels} panels found (columns {found}) differ in width; crop the clips "
            "yourself and score them with --pred / --truth"
        )
    return [np.ascontiguousarray(clip[:, top:bottom, a:b]) for a, b in cols]


def read_side_by_side(
    folder: Path, truth_first: bool = True
) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """(names, predictions, ground truth) from a folder of side-by-side clips, one per sample
    (ground truth on the left unless `truth_first` is False)."""
    names, clips = read_clip_set(folder)
    paths = list_clips(folder) if not (Path(folder) / "clips.npy").exists() else {}
    pred, truth = [], []
    for name, clip in zip(names, clips, strict=True):
        left, right = split_side_by_side(clip, paths.get(name, Path(folder) / name))
        (truth if truth_first else pred).append(left)
        (pred if truth_first else truth).append(right)
    return names, pred, truth


def write_gif(path: Path, clip: np.ndarray, fps: float) -> None:
    frames = [Image.fromarray(f) for f in clip]
    frames[0].save(
        path, save_all=True, append_images=frames[1:], duration=int(round(1000 / fps)), loop=0
    )


def write_clip_set(
    folder: Path,
    names: Iterable[str],
    clips: Iterable[np.ndarray],
    fmt: str = "npy",
    fps: float = 3.0,
) -> None:
    """Write clips as one file (or frame folder) per sample, in format gif, png or npy."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, clip in zip(names, clips, strict=True):
        if fmt == "gif":
            write_gif(folder / f"{name}.gif", clip, fps)
        elif fmt == "npy":
            np.save(folder / f"{name}.npy", np.asarray(clip, dtype=np.uint8))
        elif fmt == "png":
            d = folder / name
            d.mkdir(exist_ok=True)
            for i, f in enumerate(clip):
                Image.fromarray(f).save(d / f"{i:03d}.png")
        else:
            raise ValueError(f"unknown clip format {fmt!r}; use gif, png or npy")


# What a decoding stage (baselines, decode) writes for `evaluate`: the test clips in order.
RECONSTRUCTIONS = "clips.npy"  # (n, F, H, W, 3) uint8
NAMES = "names.txt"  # one <segment>_<clip:03d> per line, the order of clips.npy


def write_reconstructions(
    folder: Path, names: list[str], clips: np.ndarray, fps: float, n_gifs: int = 4
) -> list[Path]:
    """The layout every decoding stage writes: clips.npy, names.txt and a few sample GIFs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / RECONSTRUCTIONS, clips)
    (folder / NAMES).write_text("".join(f"{n}\n" for n in names))
    write_clip_set(folder / "samples", names[:n_gifs], clips[:n_gifs], fmt="gif", fps=fps)
    return [Path(RECONSTRUCTIONS), Path(NAMES)]
