"""Training the SynthCC judges: small frame and video classifiers fitted on a dataset's training
segments (and freshly rendered scenes of its world), scored on its test segments; loaded with
mindvideo.eval.judges.load_judge."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    PreTrainedModel,
    ResNetConfig,
    ResNetForImageClassification,
    VideoMAEConfig,
    VideoMAEForVideoClassification,
    VideoMAEImageProcessor,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

from mindvideo.data.cc2017 import (
    Stimuli,
    clip_frame_offsets,
    open_stimuli,
    read_metadata,
    resolve_root,
)
from mindvideo.data.synth.world import DIRECTIONS
from mindvideo.errors import ConfigError, DataError
from mindvideo.eval.judge_config import (
    JudgeConfig,
    _JudgeTraining,
)
from mindvideo.eval.judges import (
    JUDGES_DIR,
    METRICS_FILE,
    VERSION,
    Judge,
    Kind,
    Progress,
    quiet_transformers,
    read_json,
)
from mindvideo.train.loop import fit_epochs, steps_per_epoch
from mindvideo.train.schedules import warmup_cosine_pi_first

# Numpy stream ids of the judges' random draws (data order, augmentation).
_STREAM = {"frame": 1, "video": 2}


def _class_names(stimuli: Stimuli) -> dict[str, list[str]]:
    path = stimuli.folder / "classes.json"
    if not path.exists():
        raise DataError(
            f"{path}: class names not found; the judges are trained on SynthCC's labelled "
            "stimuli (simulate the dataset with `mvbench data simulate`)"
        )
    names = read_json(path)
    for key in ("frame", "video"):
        if not isinstance(names.get(key), list) or not names[key]:
            raise DataError(f"{path}: key {key!r} must list the {key} class names")
    return names


def _annotations(stimuli: Stimuli, segment: str, table: str):
    df = stimuli.frame_labels(segment) if table == "frames" else stimuli.clips(segment)
    path = stimuli.folder / f"{segment}_{table}.csv"
    if df is None:
        raise DataError(f"{path}: annotations not found; re-simulate the dataset")
    need = {
        "frames": ("frame_class", "video_class", "scene"),
        "clips": ("video_class", "scene_cut"),
    }
    missing = [c for c in need[table] if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; re-simulate the dataset")
    return df


def _frame_set(stimuli: Stimuli, segments: list[str], stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every stride-th frame of the segments and its frame class: (n, H, W, 3), (n,)."""
    xs, ys = [], []
    for seg in segments:
        frames = stimuli.frames(seg)
        labels = _annotations(stimuli, seg, "frames")["frame_class"].to_numpy()
        if len(labels) != len(frames):
            raise DataError(
                f"{stimuli.folder / (seg + '_frames.csv')}: {len(labels)} rows but "
                f"{seg}.npy has {len(frames)} frames; re-simulate the dataset"
            )
        xs.append(np.asarray(frames[::stride]))
        ys.append(labels[::stride])
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def _clip_set(
    stimuli: Stimuli, segments: list[str], num_frames: int, step: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Clips that stay inside one scene and their video class: (n, num_frames, H, W, 3), (n,).

    step None: the annotated clips (one per TR) without scene cuts. step k: a clip of one TR's
    length starting at every k-th rendered frame whose frames all belong to one scene.
    """
    per_tr = stimuli.frames_per_tr
    offsets = clip_frame_offsets(num_frames, per_tr)
    xs, ys = [], []
    for seg in segments:
        frames = stimuli.frames(seg)
        if step is None:
            clips = _annotations(stimuli, seg, "clips")
            keep = ~clips["scene_cut"].astype(bool).to_numpy()
            first = clips["start_frame"] if "start_frame" in clips else clips.index * per_tr
            starts = first.to_numpy()[keep]
            labels = clips["video_class"].to_numpy()[keep]
        else:
            table = _annotations(stimuli, seg, "frames")
            scene = table["scene"].to_numpy()
            starts = np.arange(0, len(frames) - per_tr + 1, step)
            starts = starts[scene[starts] == scene[starts + per_tr - 1]]
            labels = table["video_class"].to_numpy()[starts]
        if len(starts) and starts[-1] + per_tr > len(frames):
            raise DataError(
                f"{stimuli.folder / (seg + '.npy')}: clip at frame {starts[-1]} ends after the "
                f"last frame ({len(frames)}); re-simulate the dataset"
            )
        xs.append(np.asarray(frames[starts[:, None] + offsets[None, :]]))
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def _extra_examples(
    meta: dict, kind: Kind, cfg: _JudgeTraining, seed: int, per_tr: int
) -> tuple[np.ndarray, np.ndarray]:
    """Freshly rendered scenes of the dataset's world: frames or one-TR clips with labels."""
    from mindvideo.data.synth import world as synth_world
    from mindvideo.data.synth.config import WorldConfig

    world_cfg = WorldConfig.model_validate(meta["config"]["world"])
    rng = np.random.default_rng([seed, _STREAM[kind], 2])
    tr = per_tr / world_cfg.fps
    xs, ys = [], []
    # Scenes at least one TR long, so every example shows a single scene.
    world_cfg = world_cfg.model_copy(update={"scene_min_s": max(world_cfg.scene_min_s, tr)})
    scenes = synth_world.make_scenes(rng, cfg.extra_scenes * world_cfg.scene_max_s, world_cfg)
    scenes = scenes[: cfg.extra_scenes]
    for scene in scenes:
        local = synth_world.Scene(**{**scene.__dict__, "start_s": 0.0})
        frames = synth_world.render_segment([local], per_tr, world_cfg)  # one TR of the scene
        if kind == "frame":
            pick = rng.integers(0, per_tr, size=2)
            xs.append(frames[pick])
            ys.append(np.full(2, synth_world.frame_class(scene.shape, scene.colour)))
        else:
            offsets = clip_frame_offsets(cfg.num_frames, per_tr)
            xs.append(frames[offsets][None])
            ys.append(np.array([synth_world.video_class(scene.shape, scene.direction)]))
    if not xs:
        return np.zeros((0,)), np.zeros((0,), np.int64)
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def _new_model(
    kind: Kind, cfg: _JudgeTraining, names: list[str], size: tuple[int, int], seed: int
) -> PreTrainedModel:
    labels = dict(
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    # transformers initialises weights from torch's global generator: seed it inside a fork so
    # the caller's random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg.architecture == "resnet":
            frames = cfg.num_frames if kind == "video" else 1
            extra = {"num_frames": frames} if kind == "video" else {}
            return ResNetForImageClassification(
                ResNetConfig(
                    num_channels=3 * frames,
                    embedding_size=cfg.resnet_widths[0],
                    hidden_sizes=list(cfg.resnet_widths),
                    depths=list(cfg.resnet_depths),
                    layer_type="basic",
                    downsample_in_first_stage=False,
                    image_size=size[0],  # recorded so the judge resizes inputs to it
                    **extra,
                    **labels,
                )
            )
        common = dict(
            image_size=size[0],
            patch_size=cfg.patch_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            intermediate_size=cfg.hidden_size * cfg.mlp_ratio,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **labels,
        )
        if kind == "frame":
            return ViTForImageClassification(ViTConfig(**common))
        return VideoMAEForVideoClassification(
            VideoMAEConfig(
                **common,
                num_frames=cfg.num_frames,
                tubelet_size=cfg.tubelet_size,
                use_mean_pooling=True,
            )
        )


def dihedral(
    x: torch.Tensor, y: torch.Tensor, kind: Kind, flip_w: bool, flip_h: bool, transpose: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip and/or transpose frames (b, H, W, 3) or clips (b, T, H, W, 3); labels follow.

    A frame's class (shape x colour) does not change. A clip's class is shape x direction,
    direction k pointing at 45k degrees counter-clockwise from right on screen (see
    mindvideo.data.synth.world): a left-right flip maps k -> 4 - k, an up-down flip k -> -k and
    a transpose (x <-> y) k -> 6 - k, mod 8. Applied in that order.
    """
    n_dir = len(DIRECTIONS)
    h_axis, w_axis = x.ndim - 3, x.ndim - 2
    shape, direction = y // n_dir, y % n_dir
    if flip_w:
        x, direction = x.flip(w_axis), n_dir // 2 - direction
    if flip_h:
        x, direction = x.flip(h_axis), -direction
    if transpose:
        x, direction = x.transpose(h_axis, w_axis), 3 * n_dir // 4 - direction
    if kind == "video":
        y = shape * n_dir + direction % n_dir
    return x, y


def _augment(
    x: torch.Tensor, y: torch.Tensor, kind: Kind, cfg: _JudgeTraining, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random dihedral transforms (if cfg.dihedral) and circular shifts of up to cfg.shift
    pixels (every frame of a clip alike) of a uint8 batch; modifies x and y in place."""
    if cfg.dihedral:
        draws = rng.random((len(x), 3)) < 0.5  # (flip_w, flip_h, transpose) per example
        for ops in {tuple(d) for d in draws.tolist()}:
            if not any(ops):
                continue
            idx = torch.from_numpy(np.flatnonzero((draws == ops).all(axis=1)))
            x[idx], y[idx] = dihedral(x[idx], y[idx], kind, *ops)
    if cfg.shift:
        h_axis, w_axis = x.ndim - 4, x.ndim - 3  # of one example
        shifts = rng.integers(-cfg.shift, cfg.shift + 1, size=(len(x), 2))
        for i, (dy, dx) in enumerate(shifts.tolist()):
            x[i] = x[i].roll((dy, dx), dims=(h_axis, w_axis))
    return x, y


def _fit(
    judge: Judge,
    cfg: _JudgeTraining,
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    tick: Progress,
) -> float:
    """Train judge.model on uint8 examples x with labels y; returns the last epoch's mean loss."""
    model = judge.model
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.99),
    )
    x_all, y_all = torch.from_numpy(x), torch.from_numpy(y)
    total = cfg.epochs * steps_per_epoch(len(x), cfg.batch_size, ragged=True)
    warmup = max(1, int(cfg.warmup_fraction * total))

    def batch_loss(batch: np.ndarray) -> torch.Tensor:
        idx = torch.from_numpy(batch)
        xb, yb = _augment(x_all[idx], y_all[idx].clone(), judge.kind, cfg, rng)
        logits = model(pixel_values=judge.preprocess(xb)).logits
        return F.cross_entropy(logits, yb.to(judge.device), label_smoothing=cfg.label_smoothing)

    def end_epoch(epoch: int, loss: float) -> None:
        tick(1, f"{judge.kind} judge epoch {epoch + 1}/{cfg.epochs} (loss {loss:.3f})")

    def lr_at(step: int, peak: float) -> float:
        return peak * warmup_cosine_pi_first(step, total, warmup)

    model.train()
    loss_mean = fit_epochs(
        opt, batch_loss, rng, len(x), cfg, ragged=True, lr_at=lr_at, end=end_epoch
    )
    model.eval()
    return loss_mean


def _top_k(logits: np.ndarray, y: np.ndarray, k: int) -> float | None:
    """Share of examples whose label is among the k largest logits (None without examples)."""
    if not len(y):
        return None
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float((top == y[:, None]).any(axis=1).mean())


def _check_sizes(cfg: JudgeConfig, stimuli: Stimuli, size: tuple[int, int], root: Path) -> None:
    h, w = size
    if h != w:
        raise DataError(
            f"{root / 'dataset.json'}: frames are {h}x{w}; the judges need square frames"
        )
    for key, judge in (("frame", cfg.frame), ("video", cfg.video)):
        side = judge.input_size or h
        if judge.architecture != "resnet" and side % judge.patch_size:
            raise ConfigError(
                f"judges.{key}.patch_size = {judge.patch_size} does not divide the judge's "
                f"input size {side}; choose a divisor of {side}"
            )
    if cfg.video.num_frames > stimuli.frames_per_tr:
        raise ConfigError(
            f"judges.video.num_frames = {cfg.video.num_frames} but a TR has only "
            f"{stimuli.frames_per_tr} rendered frames ({root / 'dataset.json'}); choose at most "
            f"{stimuli.frames_per_tr}"
        )


def _check_labels(y: np.ndarray, names: list[str], what: str, path: Path) -> None:
    if len(y) and (y.min() < 0 or y.max() >= len(names)):
        raise DataError(
            f"{path}: {what} labels span {y.min()}..{y.max()} but classes.json names "
            f"{len(names)} classes; re-simulate the dataset"
        )


def _publish(tmp: Path, out: Path) -> None:
    """Move a finished judges folder into place, replacing an older one."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def train_synth_judges(
    root: Path,
    cfg: JudgeConfig | None = None,
    progress: Progress | None = None,
    device: str = "cpu",
    out: Path | None = None,
) -> dict:
    """Train the frame and video judges of a SynthCC dataset; returns the metrics.json content.

    Trained on the training segments (frames with frame_class; clips with video_class, without
    scene cuts), scored on the test segments: `frame_judge_top1/top5` over every test frame,
    `video_judge_top1/top5` over the test clips without scene cuts. Saved under
    `<root>/judges/` (or `out`), replacing what is there only once training has finished. Not
    cached here: the `foundation` stage trains them once into the stage cache (`mvbench run`,
    `mvbench score`). Same config and seed, same weights.
    """
    cfg = cfg or JudgeConfig()
    root = resolve_root(root)
    out = Path(out) if out is not None else root / JUDGES_DIR
    stimuli = open_stimuli(root)
    if stimuli is None:
        raise DataError(f"{root / 'stimuli'}: stimulus folder not found; simulate the dataset")
    meta = read_metadata(root)
    segments = meta.get("segments") or {}
    if not segments.get("train") or not segments.get("test"):
        raise DataError(
            f"{root / 'dataset.json'}: key 'segments' must list 'train' and 'test' segments; "
            "the judges are trained on SynthCC (simulate it with `mvbench data simulate`)"
        )
    names = _class_names(stimuli)
    first = stimuli.frames(segments["train"][0])
    size = (int(first.shape[1]), int(first.shape[2]))
    _check_sizes(cfg, stimuli, size, root)
    tick = progress or (lambda n, what: None)
    started = time.perf_counter()
    classes_path = stimuli.folder / "classes.json"

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        metrics: dict = {}
        for kind, judge_cfg in (("frame", cfg.frame), ("video", cfg.video)):
            if kind == "frame":
                x_tr, y_tr = _frame_set(stimuli, segments["train"], judge_cfg.frame_stride)
                x_te, y_te = _frame_set(stimuli, segments["test"], 1)
            else:
                x_tr, y_tr = _clip_set(
                    stimuli, segments["train"], judge_cfg.num_frames, judge_cfg.clip_step
                )
                x_te, y_te = _clip_set(stimuli, segments["test"], judge_cfg.num_frames, None)
            for y in (y_tr, y_te):
                _check_labels(y, names[kind], kind, classes_path)
            if judge_cfg.extra_scenes and "config" in meta:
                x_ex, y_ex = _extra_examples(meta, kind, judge_cfg, cfg.seed, stimuli.frames_per_tr)
                x_tr, y_tr = np.concatenate([x_tr, x_ex]), np.concatenate([y_tr, y_ex])
            init_seed = int(
                np.random.SeedSequence([cfg.seed, _STREAM[kind], 0]).generate_state(1)[0]
            )
            side = judge_cfg.input_size or size[0]
            model = _new_model(kind, judge_cfg, names[kind], (side, side), init_seed)
            judge = Judge(
                model.to(device),
                kind,
                (side, side),
                judge_cfg.num_frames if kind == "video" else None,
                (0.5, 0.5, 0.5),
                (0.5, 0.5, 0.5),
                device,
            )
            rng = np.random.default_rng([cfg.seed, _STREAM[kind], 1])
            loss = _fit(judge, judge_cfg, x_tr, y_tr, rng, tick)
            logits = judge.logits(x_te, batch_size=128)
            tick(1, f"{kind} judge evaluated")
            metrics |= {
                f"{kind}_judge_top1": _top_k(logits, y_te, 1),
                f"{kind}_judge_top5": _top_k(logits, y_te, 5),
                f"{kind}_judge_train_loss": loss,
                f"{kind}_classes": len(names[kind]),
                f"{kind}_classes_seen": int(len(np.unique(y_tr))),
                f"{kind}_train_examples": len(y_tr),
                f"{kind}_test_examples": len(y_te),
            }
            folder = tmp / kind
            with quiet_transformers():
                model.cpu().save_pretrained(folder)
            _processor(kind, judge.image_size, judge).save_pretrained(folder)
        metrics |= {
            "train_seconds": round(time.perf_counter() - started, 1),
            "seed": cfg.seed,
            "version": VERSION,
            "config": cfg.model_dump(mode="json"),
        }
        # metrics.json last: a judges folder without it is never taken as finished.
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return json.loads((out / METRICS_FILE).read_text())


def _processor(kind: Kind, size: tuple[int, int], judge: Judge):
    """The image processor config that loads with the judge, as the real checkpoints have."""
    common = dict(image_mean=list(judge.mean), image_std=list(judge.std))
    if kind == "frame":
        return ViTImageProcessor(size={"height": size[0], "width": size[1]}, **common)
    return VideoMAEImageProcessor(
        size={"shortest_edge": size[0]}, crop_size={"height": size[0], "width": size[1]}, **common
    )
