"""The classifiers that score reconstructions: a frame judge (ViT) and a video judge (VideoMAE).

MinD-Video's N-way top-K protocol scores frames with an ImageNet ViT
(google/vit-base-patch16-224) and clips with a Kinetics VideoMAE
(MCG-NJU/videomae-base-finetuned-kinetics). For real data those are loaded from local folders
with `load_judge`. For SynthCC, mindvideo.train.judges trains small models of the same
transformers classes on the simulator's ground-truth frames (label: shape x colour) and clips
(label: shape x motion direction) and saves them in the same form, so both paths score through
one `Judge`.

Layout written under a SynthCC dataset:
    judges/frame/    config.json, model.safetensors, preprocessor_config.json (ViT)
    judges/video/    the same for VideoMAE
    judges/metrics.json   held-out accuracies, class counts, the config and seed
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    PreTrainedModel,
    ResNetForImageClassification,
    VideoMAEForVideoClassification,
    ViTForImageClassification,
)

from mindvideo.data.cc2017 import (
    resolve_root,
)
from mindvideo.errors import ConfigError, DataError
from mindvideo.eval.judge_config import (  # noqa: F401  (re-exported)
    FrameJudgeConfig,
    JudgeConfig,
    VideoJudgeConfig,
    _JudgeTraining,
    work_units,
)

Progress = Callable[[int, str], None]  # (units done since last call, what is being done)
Kind = Literal["frame", "video"]

# Bump when training or the saved layout changes: cached judges of another version retrain.
VERSION = 1
JUDGES_DIR = "judges"
METRICS_FILE = "metrics.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
# What each kind may be, by config.json's model_type. The real checkpoints are a ViT and a
# VideoMAE; SynthCC's judges default to small ResNets (a clip judge stacks its frames as
# channels), which learn the synthetic classes in CPU minutes where small ViTs do not.
MODEL_CLASSES = {
    "frame": {"vit": ViTForImageClassification, "resnet": ResNetForImageClassification},
    "video": {"videomae": VideoMAEForVideoClassification, "resnet": ResNetForImageClassification},
}


@dataclass
class Judge:
    """A classifier that scores frames or clips: uint8 in, logits out, normalising itself."""

    model: PreTrainedModel
    kind: Kind
    image_size: tuple[int, int]  # (height, width) the model expects
    num_frames: int | None  # frames per clip (video judge only)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: str = "cpu"

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def labels(self) -> list[str]:
        id2label = self.model.config.id2label
        return [str(id2label.get(i, f"LABEL_{i}")) for i in range(self.num_classes)]

    def preprocess(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 frames (n, H, W, 3) or clips (n, F, H, W, 3) -> normalised pixel_values.

        Frames: (n, 3, h, w); clips: (n, num_frames, 3, h, w), at the model's size.
        """
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        ndim = 4 if self.kind == "frame" else 5
        what = "frames (n, H, W, 3)" if self.kind == "frame" else "clips (n, frames, H, W, 3)"
        if x.ndim != ndim or x.shape[-1] != 3:
            raise DataError(f"{self.kind} judge: expected uint8 {what}, got shape {tuple(x.shape)}")
        if x.dtype != torch.uint8:
            raise DataError(
                f"{self.kind} judge: expected uint8 {what} on 0..255, got {x.dtype}; convert "
                "with (x * 255).round().clip(0, 255).astype(np.uint8) if x is on [0, 1]"
            )
        if self.kind == "video" and x.shape[1] != self.num_frames:
            # Evenly spaced frames, as Stimuli.clip samples a clip (12 -> 0, 2, ..., 10).
            offsets = (torch.arange(self.num_frames) * x.shape[1]) // self.num_frames
            x = x[:, offsets]
        lead = x.shape[:-3]
        x = x.to(self.device).reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
        # (n * frames, 3, H, W) on [0, 1]
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(
                x, size=self.image_size, mode="bilinear", antialias=True, align_corners=False
            )
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        x = x.reshape(*lead, 3, *self.image_size)
        if self.kind == "video" and self.model.config.model_type == "resnet":
            x = x.reshape(x.shape[0], -1, *self.image_size)  # frames stacked as channels
        return x

    def logits(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(n, num_classes) float32 logits of frames (n, H, W, 3) or clips (n, F, H, W, 3)."""
        self.model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                pixels = self.preprocess(x[i : i + batch_size])
                out.append(self.model(pixel_values=pixels).logits.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        return np.concatenate(out)

    def probs(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(n, num_classes) softmax of `logits`."""
        z = self.logits(x, batch_size)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Loading


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None


@contextlib.contextmanager
def quiet_transformers():
    """No per-file progress bars from transformers while a judge is saved or loaded."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_judge(folder: Path, kind: Kind, device: str = "cpu") -> Judge:
    """A judge from a local `save_pretrained` folder (the real checkpoints or SynthCC's own).

    The frame judge must be a ViTForImageClassification, the video judge a
    VideoMAEForVideoClassification. `preprocessor_config.json`, if present, gives the
    normalisation (`image_mean`, `image_std`, `do_normalize`); otherwise mean = std = 0.5.
    """
    if kind not in MODEL_CLASSES:
        raise ConfigError(f"judge kind must be 'frame' or 'video', got {kind!r}")
    folder = Path(folder)
    allowed = MODEL_CLASSES[kind]
    names = " or ".join(c.__name__ for c in allowed.values())
    if not folder.is_dir():
        raise DataError(
            f"{folder}: {kind} judge folder not found; give a local folder saved with "
            f"save_pretrained holding a {names} (config.json and weights)"
        )
    config_path = folder / "config.json"
    if not config_path.exists():
        raise DataError(
            f"{folder}: no config.json, so this is not a saved transformers model; give the "
            f"folder of a {names} saved with save_pretrained"
        )
    config = read_json(config_path)
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    cls = allowed.get(model_type)
    video_resnet = kind == "video" and model_type == "resnet"
    stacking = " (a video ResNet stacks its RGB frames as channels)" if kind == "video" else ""
    if (
        cls is None
        or (architectures and cls.__name__ not in architectures)
        or (video_resnet and (config.get("num_channels", 3) % 3 or "num_frames" not in config))
        or (kind == "frame" and model_type == "resnet" and config.get("num_channels", 3) != 3)
    ):
        raise DataError(
            f"{folder}: config.json describes {architectures or model_type} "
            f"(model_type {model_type!r}), but the {kind} judge must be a {names}{stacking}; "
            "check that the frame and video judge folders are not swapped"
        )
    try:
        with quiet_transformers():
            model = cls.from_pretrained(folder, local_files_only=True)
    except Exception as e:
        raise DataError(
            f"{folder}: cannot load the {cls.__name__} ({type(e).__name__}: {e}); the weights "
            "file (model.safetensors or pytorch_model.bin) may be missing or incomplete"
        ) from None
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    pre_path = folder / PREPROCESSOR_FILE
    if pre_path.exists():
        pre = read_json(pre_path)
        if pre.get("do_normalize", True) is False:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        else:
            mean = _triple(pre.get("image_mean", mean), pre_path, "image_mean")
            std = _triple(pre.get("image_std", std), pre_path, "image_std")
    size = getattr(model.config, "image_size", 224)  # ResNets do not record one: ImageNet's
    image_size = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    num_frames = int(model.config.num_frames) if kind == "video" else None
    model.to(device).eval()
    return Judge(model, kind, image_size, num_frames, mean, std, device)


def _triple(value, path: Path, key: str) -> tuple[float, float, float]:
    values = [value] * 3 if np.isscalar(value) else list(value)
    if len(values) != 3 or (key == "image_std" and min(values) <= 0):
        raise DataError(f"{path}: {key} must be 3 numbers (positive for image_std), got {value}")
    return tuple(float(v) for v in values)


def load_synth_judges(root: Path, device: str = "cpu") -> tuple[Judge, Judge]:
    """The (frame, video) judges mindvideo.train.judges trained for a SynthCC dataset."""
    folder = resolve_root(root) / JUDGES_DIR
    if not (folder / METRICS_FILE).exists():
        raise DataError(
            f"{folder}: no trained judges (no {METRICS_FILE}); train them first with "
            "mindvideo.train.judges.train_synth_judges(root, JudgeConfig())"
        )
    return load_judge(folder / "frame", "frame", device), load_judge(
        folder / "video", "video", device
    )


# ---------------------------------------------------------------------------------------------
# Training on SynthCC
