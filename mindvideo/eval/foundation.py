"""The judges and CLIP a `foundation` stage trained (SynthCC) or points at (real data): its
folder's layout and loaders."""

from __future__ import annotations

import json
from pathlib import Path

POINTERS = "pretrained.json"  # real data: where the pre-trained models are


def load_foundation_clip(folder: Path, device: str = "cpu"):
    """Only the CLIP of a foundation stage (the judges are not loaded)."""
    from mindvideo.models.clip import load_clip

    folder = Path(folder)
    if (folder / POINTERS).exists():
        p = json.loads((folder / POINTERS).read_text())
        return load_clip(Path(p["clip_checkpoint"]), p.get("clip_model"), device)
    return load_clip(folder / "clip", device=device)


def load_scorers(folder: Path, device: str = "cpu"):
    """The judges and CLIP a foundation stage trained (or pointed at)."""
    from mindvideo.eval.judges import load_judge
    from mindvideo.eval.protocols import Scorers
    from mindvideo.models.clip import load_clip

    folder = Path(folder)
    if (folder / POINTERS).exists():
        p = json.loads((folder / POINTERS).read_text())
        return Scorers(
            frame_judge=load_judge(Path(p["frame_judge"]), "frame", device),
            video_judge=load_judge(Path(p["video_judge"]), "video", device),
            clip=load_clip(Path(p["clip_checkpoint"]), p.get("clip_model"), device),
        )
    return Scorers(
        frame_judge=load_judge(folder / "judges" / "frame", "frame", device),
        video_judge=load_judge(folder / "judges" / "video", "video", device),
        clip=load_clip(folder / "clip", device=device),
    )
