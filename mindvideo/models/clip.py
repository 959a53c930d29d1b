"""CLIP for the pipeline: train a small synthetic-domain open_clip model, or load a real one."""

from __future__ import annotations

import difflib
import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import set_model_preprocess_cfg
from safetensors.torch import load_file

from mindvideo.data.cc2017 import open_stimuli, read_metadata, resolve_root
from mindvideo.errors import ConfigError, DataError
from mindvideo.models.clip_config import ClipConfig, work_units  # noqa: F401  (re-exported)

VERSION = 2  # bump when training changes, so cached models are retrained
FOLDER = "clip"  # <dataset root>/clip/
WEIGHTS_FILE = "open_clip_model.safetensors"
MODEL_CONFIG_FILE = "model_config.json"  # open_clip's model config: embed_dim, vision_cfg, text_cfg
OPEN_CLIP_CONFIG_FILE = "open_clip_config.json"  # model + preprocess config, open_clip's layout
METRICS_FILE = "metrics.json"
PROMPT = "a {}"  # zero-shot prompt around a frame class name ("red triangle")
MAX_LOGIT_SCALE = math.log(100.0)  # open_clip's clamp on the learnable temperature

Progress = Callable[[int, str], None]  # (units done since last call, what is being done)


@functools.cache
def _vocab_size() -> int:
    return open_clip.SimpleTokenizer().vocab_size


def model_config(cfg: ClipConfig, image_size: int | None = None) -> dict[str, Any]:
    """The open_clip model config (as in open_clip's model_configs/*.json) of `cfg`."""
    size = cfg.image_size if cfg.image_size is not None else image_size
    if size is None:
        raise ConfigError("clip.image_size is not set; give it or pass the dataset's frame size")
    if problem := cfg.image_size_problem(size):
        raise ConfigError(problem)
    if cfg.resnet:
        # open_clip's ModifiedResNet: attention-pool heads = width * 32 // head_width.
        vision = {
            "image_size": size,
            "layers": list(cfg.vision_layers),
            "width": cfg.vision_width,
            "head_width": cfg.vision_width * 32 // cfg.vision_heads,
        }
    else:
        vision = {
            "image_size": size,
            "layers": cfg.vision_layers,
            "width": cfg.vision_width,
            "patch_size": cfg.patch_size,
            "head_width": cfg.vision_width // cfg.vision_heads,
            "pool_type": cfg.vision_pool,
        }
    return {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": vision,
        "text_cfg": {
            "context_length": cfg.context_length,
            "vocab_size": _vocab_size(),
            "width": cfg.text_width,
            "heads": cfg.text_heads,
            "layers": cfg.text_layers,
        },
    }


def build_clip(cfg: ClipConfig | dict[str, Any], image_size: int | None = None) -> open_clip.CLIP:
    """A randomly initialised open_clip `CLIP` from our config or an open_clip model config.

    Initialisation draws from torch's global generator: seed it (or fork it) around the call.
    """
    model_cfg = model_config(cfg, image_size) if isinstance(cfg, ClipConfig) else cfg
    try:
        return open_clip.CLIP(**model_cfg)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"open_clip cannot build a CLIP from {model_cfg}: {e}") from None


def build_tokenizer(context_length: int) -> open_clip.SimpleTokenizer:
    """open_clip's BPE tokenizer (its vocabulary ships with the package) at our context length."""
    return open_clip.SimpleTokenizer(context_length=context_length)


def _preprocess_size(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def frames_to_pixels(
    frames: np.ndarray | torch.Tensor,
    size: int | Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    resize_mode: str = "shortest",
    interpolation: str = "bicubic",
    fill_color: int = 0,
) -> torch.Tensor:
    """uint8 frames (n, H, W, 3) -> normalised model input (n, 3, h, w), float32.

    Follows open_clip's inference transform: resize ('shortest' side then centre crop,
    'longest' side then pad, or 'squash'), scale to [0, 1], normalise by mean/std.
    """
    x = torch.as_tensor(np.array(frames)) if not isinstance(frames, torch.Tensor) else frames
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise DataError(
            f"expected uint8 frames of shape (n, H, W, 3), got {x.dtype} {tuple(x.shape)}"
        )
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (n, 3, H, W)
    th, tw = _preprocess_size(size)
    h, w = x.shape[-2:]
    if (h, w) != (th, tw):
        if resize_mode == "squash":
            new = (th, tw)
        else:
            pick = max if resize_mode == "shortest" else min
            scale = pick(th / h, tw / w)
            new = (max(1, round(h * scale)), max(1, round(w * scale)))
        mode = interpolation if interpolation in ("bicubic", "bilinear") else "nearest"
        smooth = mode != "nearest"
        x = F.interpolate(
            x, size=new, mode=mode, antialias=smooth, align_corners=False if smooth else None
        ).clamp_(0.0, 1.0)
        h, w = new
        if resize_mode == "shortest":
            top, left = (h - th) // 2, (w - tw) // 2
            x = x[:, :, top : top + th, left : left + tw]
        elif resize_mode == "longest":
            out = x.new_full((x.shape[0], 3, th, tw), fill_color / 255.0)
            top, left = (th - h) // 2, (tw - w) // 2
            out[:, :, top : top + h, left : left + w] = x
            x = out
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


@dataclass
class ClipModel:
    """An open_clip model ready to embed frames and captions, with its tokenizer and preprocess."""

    model: torch.nn.Module
    tokenizer: Callable[..., torch.Tensor]
    image_size: int | tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    device: str = "cpu"
    name: str = ""

    @property
    def embed_dim(self) -> int:
        return self._dim()

    def pixels(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 frames (n, H, W, 3) -> the model's normalised input (n, 3, h, w)."""
        return frames_to_pixels(
            frames, self.image_size, self.mean, self.std, self.resize_mode, self.interpolation
        )

    @torch.no_grad()
    def image_embeddings(self, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """uint8 frames (n, H, W, 3) -> L2-normalised image embeddings (n, D), float32."""
        self.model.eval()

        def encode(chunk):
            return self.model.encode_image(self.pixels(chunk).to(self.device), normalize=True)

        return self._batched(frames, batch_size, encode)

    def _batched(self, items, batch_size: int, encode: Callable) -> np.ndarray:
        """`encode` over `items` in batches: (n, D) float32 on the CPU."""
        out = [
            encode(items[start : start + batch_size]).float().cpu()
            for start in range(0, len(items), batch_size)
        ]
        if not out:
            return np.zeros((0, self._dim()), dtype=np.float32)
        return torch.cat(out).numpy()

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Captions -> L2-normalised text embeddings (n, D), float32."""
        if isinstance(texts, str):
            raise DataError("text_embeddings takes a list of captions, got one string")
        self.model.eval()

        def encode(chunk):
            return self.model.encode_text(self.tokenizer(chunk).to(self.device), normalize=True)

        return self._batched(list(texts), batch_size, encode)

    @torch.no_grad()
    def text_tokens(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Captions -> the text tower's final token states (n, context, width), float32: the
        sequence a text-to-image UNet's cross-attention reads (SD 1.5: 77 x 768)."""
        model = self.model
        if not hasattr(model, "token_embedding"):
            raise ConfigError(
                f"{self.name or 'this CLIP'}: its text tower is not open_clip's own transformer; "
                "token states are only available for open_clip CLIP models"
            )
        model.eval()
        texts = list(texts)
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[start : start + batch_size]).to(self.device)
            cast = model.transformer.get_cast_dtype()
            x = model.token_embedding(tokens).to(cast) + model.positional_embedding.to(cast)
            x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
            out.append(x.float().cpu())
        return torch.cat(out).numpy()

    @property
    def text_width(self) -> int:
        return int(self.model.ln_final.normalized_shape[0])

    def _dim(self) -> int:
        with torch.no_grad():
            return int(self.model.encode_text(self.tokenizer(["a"]).to(self.device)).shape[-1])


# ---------------------------------------------------------------------------------------------
# Training on SynthCC frames and captions


@dataclass
class CaptionedFrames:
    frames: torch.Tensor  # (n, H, W, 3) uint8
    captions: list[str]  # unique captions
    caption_index: torch.Tensor  # (n,) index into captions
    frame_class: torch.Tensor  # (n,) frame class (shape x colour)


def load_captioned_frames(root: Path, split: str, stride: int) -> CaptionedFrames:
    """Every `stride`-th frame of a SynthCC split with its caption and frame class."""
    meta = read_metadata(root)
    segments = meta.get("segments", {}).get(split)
    if not segments:
        raise DataError(
            f"{root / 'dataset.json'}: no segments.{split} list; the synthetic-domain CLIP "
            "trains on a SynthCC dataset (mvbench data simulate); for real data load a "
            "pre-trained CLIP with load_clip(path, model_name)"
        )
    stimuli = open_stimuli(root)
    if stimuli is None:
        raise DataError(f"{root / 'stimuli'}: stimuli folder not found; re-simulate the dataset")
    frames, captions, classes = [], [], []
    for seg in segments:
        labels = stimuli.frame_labels(seg)
        path = stimuli.folder / f"{seg}_frames.csv"
        if labels is None:
            raise DataError(
                f"{path}: per-frame captions not found; the synthetic-domain CLIP needs SynthCC "
                "annotations (re-simulate the dataset)"
            )
        for column in ("caption", "frame_class"):
            if column not in labels.columns:
                raise DataError(f"{path}: no '{column}' column; re-simulate the dataset")
        seg_frames = stimuli.frames(seg)
        if len(labels) != len(seg_frames):
            raise DataError(
                f"{path}: {len(labels)} rows but {seg}.npy has {len(seg_frames)} frames; "
                "re-simulate the dataset"
            )
        frames.append(np.asarray(seg_frames[::stride]))
        captions.extend(labels["caption"].astype(str).tolist()[::stride])
        classes.append(labels["frame_class"].to_numpy()[::stride])
    unique = sorted(set(captions))
    lookup = {c: i for i, c in enumerate(unique)}
    return CaptionedFrames(
        frames=torch.from_numpy(np.concatenate(frames)),
        captions=unique,
        caption_index=torch.tensor([lookup[c] for c in captions]),
        frame_class=torch.from_numpy(np.concatenate(classes).astype(np.int64)),
    )


def frame_class_names(root: Path) -> list[str]:
    """The SynthCC frame class names (shape x colour), in class-index order."""
    path = root / "stimuli" / "classes.json"
    if not path.exists():
        raise DataError(f"{path}: frame class names not found; re-simulate the dataset")
    try:
        names = json.loads(path.read_text())["frame"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: expected {{'frame': [names...]}} ({e}); re-simulate") from None
    return [str(n) for n in names]


def evaluate_frames(
    clip: ClipModel, test: CaptionedFrames, class_names: list[str]
) -> dict[str, float]:
    """Zero-shot frame classification and image->caption retrieval on held-out frames."""
    images = torch.from_numpy(clip.image_embeddings(test.frames.numpy()))  # (n, D)
    prompts = torch.from_numpy(clip.text_embeddings([PROMPT.format(n) for n in class_names]))
    captions = torch.from_numpy(clip.text_embeddings(test.captions))  # (U, D)
    metrics = {}
    for name, text, truth in (
        ("zeroshot", prompts, test.frame_class),
        ("retrieval", captions, test.caption_index),
    ):
        scores = images @ text.T
        ranked = scores.topk(min(5, text.shape[0]), dim=1).indices
        hit = ranked == truth[:, None]
        metrics[f"clip_{name}_top1"] = hit[:, 0].float().mean().item()
        metrics[f"clip_{name}_top5"] = hit.any(1).float().mean().item()
    metrics["clip_retrieval_candidates"] = float(len(test.captions))
    metrics["clip_zeroshot_chance"] = 1.0 / len(class_names)
    return metrics


def evaluate_clip(clip: ClipModel, root: Path) -> dict[str, float]:
    """Zero-shot frame classification ("a {colour} {shape}" prompts from classes.json, top-1 and
    top-5 over the frame classes) and image->caption retrieval on a SynthCC dataset's test frames.
    """
    root = resolve_root(Path(root))
    return evaluate_frames(clip, load_captioned_frames(root, "test", 1), frame_class_names(root))


# ---------------------------------------------------------------------------------------------
# Loading


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: not valid JSON ({e}); retrain with train_domain_clip (mindvideo.train.clip)"
        ) from None
    if not isinstance(value, dict):
        raise DataError(
            f"{path}: expected a JSON object; retrain with train_domain_clip (mindvideo.train.clip)"
        )
    return value


def _load_ours(folder: Path, device: str) -> ClipModel:
    model_cfg = _read_json(folder / MODEL_CONFIG_FILE)
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_cfg]
    if missing:
        raise DataError(
            f"{folder / MODEL_CONFIG_FILE}: missing key(s) {missing}; expected an open_clip "
            "model config (embed_dim, vision_cfg, text_cfg)"
        )
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        raise DataError(
            f"{weights}: weights not found; retrain with train_domain_clip (mindvideo.train.clip)"
        )
    preprocess: dict = {}
    if (folder / OPEN_CLIP_CONFIG_FILE).exists():
        preprocess = _read_json(folder / OPEN_CLIP_CONFIG_FILE).get("preprocess_cfg", {})
    try:
        model = build_clip(model_cfg)
    except ConfigError as e:
        raise DataError(f"{folder / MODEL_CONFIG_FILE}: {e}") from None
    try:
        state = load_file(str(weights))
    except Exception as e:
        raise DataError(f"{weights}: cannot read ({type(e).__name__}: {e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise DataError(
            f"{weights}: does not fit the model of {folder / MODEL_CONFIG_FILE} "
            f"({_first_line(e)}); retrain with train_domain_clip (mindvideo.train.clip)"
        ) from None
    size = model_cfg["vision_cfg"].get("image_size", 224)
    preprocess = {
        "size": size,
        "mean": open_clip.OPENAI_DATASET_MEAN,
        "std": open_clip.OPENAI_DATASET_STD,
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
        **preprocess,
    }
    set_model_preprocess_cfg(model, preprocess)
    context = model_cfg["text_cfg"].get("context_length", 77)
    return _ready(model, build_tokenizer(context), preprocess, device, str(folder))


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[:2])[:300]


def _ready(model, tokenizer, preprocess: dict, device: str, name: str) -> ClipModel:
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    size = preprocess["size"]
    if not isinstance(size, int):
        size = int(size[0]) if size[0] == size[1] else (int(size[0]), int(size[1]))
    return ClipModel(
        model=model,
        tokenizer=tokenizer,
        image_size=size,
        mean=tuple(float(v) for v in preprocess["mean"]),
        std=tuple(float(v) for v in preprocess["std"]),
        resize_mode=preprocess.get("resize_mode", "shortest"),
        interpolation=preprocess.get("interpolation", "bicubic"),
        device=device,
        name=name,
    )


def _load_open_clip(path: Path, model_name: str, device: str) -> ClipModel:
    """A real checkpoint file through open_clip's own factory (a local file: no download)."""
    pretrained = None if model_name.startswith("local-dir:") else str(path)
    if pretrained is not None:
        known = open_clip.list_models()
        if model_name.replace("/", "-") not in known:
            lowered = model_name.lower()
            similar = [m for m in known if lowered in m.lower()]
            similar = similar or difflib.get_close_matches(model_name, known, n=8, cutoff=0.5)
            hint = (
                f"similar: {', '.join(similar[:12])}" if similar else "see open_clip.list_models()"
            )
            raise DataError(
                f"{model_name!r}: not an open_clip model name ({hint}); give the architecture "
                f"that {path.name} was trained with"
            )
    try:
        model, _, _ = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device, weights_only=True
        )
    except Exception as e:  # open_clip raises RuntimeError, AssertionError, pickle errors...
        raise DataError(
            f"{path}: does not fit open_clip model {model_name!r} or is not a readable "
            f"checkpoint ({type(e).__name__}: {_first_line(e)}); give a state-dict file "
            "(.safetensors, .bin, .pt) and the architecture it was trained with as model_name"
        ) from None
    try:
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as e:
        raise DataError(f"{model_name!r}: cannot build its tokenizer ({e})") from None
    preprocess = dict(model.visual.preprocess_cfg)
    return _ready(model, tokenizer, preprocess, device, model_name)


def load_clip(path: Path | str, model_name: str | None = None, device: str = "cpu") -> ClipModel:
    """Load a CLIP for embedding frames and captions.

    - a folder with our model_config.json (from mindvideo.train.clip): the synthetic-domain
      CLIP;
    - a folder in open_clip's local layout (open_clip_config.json + weights): via `local-dir:`;
    - a checkpoint file plus `model_name` (e.g. "ViT-L-14"): the real-data path, built by
      `open_clip.create_model_and_transforms(model_name, pretrained=path)`.
    Weights are read as safetensors or with torch.load(weights_only=True), never full pickle.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"{path}: CLIP not found; give the folder written by mindvideo.train.clip "
            "(<dataset>/clip) or a local open_clip checkpoint file with its model_name"
        )
    if path.is_dir():
        if (path / MODEL_CONFIG_FILE).exists():
            return _load_ours(path, device)
        if (path / OPEN_CLIP_CONFIG_FILE).exists():
            return _load_open_clip(path, f"local-dir:{path}", device)
        raise DataError(
            f"{path}: folder has no {MODEL_CONFIG_FILE} (nor {OPEN_CLIP_CONFIG_FILE}); train one "
            "with mindvideo.train.clip, or give a checkpoint file and its open_clip model_name"
        )
    if model_name is None:
        raise DataError(
            f"{path}: a checkpoint file needs its open_clip architecture; pass model_name "
            "(e.g. 'ViT-L-14', see open_clip.list_models())"
        )
    return _load_open_clip(path, model_name, device)


def caption_tokens(clip, captions) -> np.ndarray:
    """(n, context, width) token states, computed once per distinct caption."""
    captions = np.asarray(captions)
    unique, index = np.unique(captions, return_inverse=True)
    return clip.text_tokens(list(unique))[index]
