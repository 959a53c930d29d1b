"""Frame and video judges: SynthCC training, caching, loading real-format checkpoints, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import IMAGENET_MEAN, IMAGENET_STD, tiny_videomae_judge, tiny_vit_judge
from pydantic import ValidationError

from mindvideo.data.cc2017 import open_stimuli, read_metadata
from mindvideo.errors import ConfigError, DataError
from mindvideo.eval.judges import (
    FrameJudgeConfig,
    JudgeConfig,
    VideoJudgeConfig,
    load_judge,
    load_synth_judges,
    work_units,
)
from mindvideo.train.judges import dihedral, train_synth_judges

SMALL = JudgeConfig(
    frame=FrameJudgeConfig(
        resnet_widths=(16, 32),
        resnet_depths=(1, 1),
        epochs=6,
        batch_size=32,
        frame_stride=2,
        extra_scenes=200,
    ),
    video=VideoJudgeConfig(
        resnet_widths=(8, 16), resnet_depths=(1, 1), epochs=2, batch_size=32, extra_scenes=40
    ),
    seed=0,
)
# The transformer judges of the real checkpoints' classes, trained small (no extra scenes).
_SMALL = {"hidden_size": 32, "layers": 1, "heads": 2, "epochs": 1, "batch_size": 32}
SMALL_TRANSFORMERS = JudgeConfig(
    frame=FrameJudgeConfig(architecture="vit", frame_stride=4, extra_scenes=0, **_SMALL),
    video=VideoJudgeConfig(architecture="videomae", extra_scenes=0, **_SMALL),
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _copy(smoke_dataset, tmp_path_factory, name):
    root = tmp_path_factory.mktemp(name) / "synthcc"
    shutil.copytree(smoke_dataset, root)
    return root


@pytest.fixture(scope="module")
def trained(smoke_dataset, tmp_path_factory):
    """A copy of the smoke dataset with SMALL judges trained; (root, metrics, units ticked)."""
    root = _copy(smoke_dataset, tmp_path_factory, "judges")
    units = []
    metrics = train_synth_judges(root, SMALL, progress=lambda n, what: units.append(n))
    return root, metrics, sum(units)


def _test_frames(root):
    stimuli = open_stimuli(root)
    test = read_metadata(root)["segments"]["test"]
    frames = np.concatenate([np.asarray(stimuli.frames(s)) for s in test])
    labels = np.concatenate([stimuli.frame_labels(s)["frame_class"].to_numpy() for s in test])
    return frames, labels


def _normalise(x, mean, std, size):
    """The documented preprocessing, written out: (n, H, W, 3) uint8 -> (n, 3, size, size)."""
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    if t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True)
    return (t - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


# --- training on SynthCC ---------------------------------------------------------------------


def test_training_writes_judges_and_metrics(trained):
    root, metrics, units = trained
    for kind in ("frame", "video"):
        for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
            assert (root / "judges" / kind / name).is_file()
    on_disk = json.loads((root / "judges" / "metrics.json").read_text())
    assert on_disk == metrics
    for key in ("frame_judge_top1", "frame_judge_top5", "video_judge_top1", "video_judge_top5"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["frame_judge_top5"] >= metrics["frame_judge_top1"]
    assert metrics["frame_classes"] == metrics["video_classes"] == 80
    assert metrics["config"] == SMALL.model_dump(mode="json")
    assert metrics["seed"] == 0
    assert units == work_units(SMALL)
    # Nothing half-written left next to the finished folder.
    assert not [p for p in root.iterdir() if p.name.startswith(".judges")]
    pre = json.loads((root / "judges" / "frame" / "preprocessor_config.json").read_text())
    assert pre["image_mean"] == [0.5, 0.5, 0.5] and pre["size"] == {"height": 32, "width": 32}


def test_trained_frame_judge_beats_an_untrained_one(trained):
    # The smoke data is small: held-out colour accuracy (chance 1/8) and top-5 (chance 1/16)
    # separate a trained judge from an untrained one.
    root, metrics, _ = trained
    frames, labels = _test_frames(root)
    judge, _ = load_synth_judges(root)
    colour = (judge.logits(frames).argmax(1) % 8 == labels % 8).mean()
    assert colour > 0.8
    assert metrics["frame_judge_top5"] > 0.2

    torch.manual_seed(1)
    judge.model = type(judge.model)(judge.model.config).eval()
    untrained = (judge.logits(frames).argmax(1) % 8 == labels % 8).mean()
    assert untrained < 0.5


def test_same_seed_same_weights(smoke_dataset, tmp_path_factory):
    root = _copy(smoke_dataset, tmp_path_factory, "seeded")
    frames, _ = _test_frames(root)
    clips = np.stack([open_stimuli(root).clip("test1", t, 12) for t in range(4)])
    runs = []
    # one epoch each: determinism does not need trained judges, and this trains three times
    brief = SMALL.model_copy(
        update={k: getattr(SMALL, k).model_copy(update={"epochs": 1}) for k in ("frame", "video")}
    )
    for cfg in (brief, brief, brief.model_copy(update={"seed": 1})):
        train_synth_judges(root, cfg)
        frame, video = load_synth_judges(root)
        runs.append((frame.logits(frames[:64]), video.logits(clips)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not np.allclose(runs[0][0], runs[2][0])


def test_interrupted_training_leaves_previous_judges(trained, smoke_dataset, tmp_path_factory):
    root = _copy(smoke_dataset, tmp_path_factory, "interrupted")

    def stop(n, what):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_synth_judges(root, SMALL, progress=stop)
    assert not (root / "judges").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".judges")]
    with pytest.raises(DataError, match="train them first"):
        load_synth_judges(root)

    # A finished set survives an interrupted retraining untouched.
    trained_root, metrics, _ = trained
    with pytest.raises(KeyboardInterrupt):
        train_synth_judges(trained_root, SMALL, progress=stop)
    assert json.loads((trained_root / "judges" / "metrics.json").read_text()) == metrics
    assert not [p for p in trained_root.iterdir() if p.name.startswith(".judges")]


def test_config_checks(trained):
    root, _, _ = trained
    with pytest.raises(ValidationError, match="heads"):
        FrameJudgeConfig(hidden_size=30, heads=4)
    with pytest.raises(ValidationError, match="tubelet_size"):
        VideoJudgeConfig(num_frames=5, tubelet_size=2)
    with pytest.raises(ValidationError):
        JudgeConfig.model_validate({"frame": {"epoch": 3}})
    bad_patch = SMALL.model_copy(
        update={"frame": FrameJudgeConfig(architecture="vit", patch_size=12)}
    )
    with pytest.raises(ConfigError, match="frame.patch_size"):
        train_synth_judges(root, bad_patch)
    too_many = SMALL.model_copy(update={"video": VideoJudgeConfig(num_frames=16)})
    with pytest.raises(ConfigError, match="num_frames"):
        train_synth_judges(root, too_many)


# --- Judge: shapes, resizing, resampling -----------------------------------------------------


def test_load_round_trip_and_shapes(trained):
    root, _, _ = trained
    frames, _ = _test_frames(root)
    frame_a, video_a = load_synth_judges(root)
    frame_b, _ = load_synth_judges(root)
    logits = frame_a.logits(frames[:40], batch_size=16)
    assert logits.shape == (40, 80) and logits.dtype == np.float32
    np.testing.assert_array_equal(logits, frame_b.logits(frames[:40]))
    probs = frame_a.probs(frames[:40])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs.argmax(1), logits.argmax(1))
    names = json.loads((root / "stimuli" / "classes.json").read_text())
    assert frame_a.labels == names["frame"] and video_a.labels == names["video"]
    assert frame_a.image_size == (32, 32) and video_a.num_frames == 6
    assert frame_a.logits(frames[:0]).shape == (0, 80)


def test_frame_judge_resizes_input(trained):
    root, _, _ = trained
    judge, _ = load_synth_judges(root)
    big = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    logits = judge.logits(big)
    assert logits.shape == (5, 80)
    with torch.no_grad():
        manual = judge.model(pixel_values=_normalise(big, [0.5] * 3, [0.5] * 3, 32)).logits
    np.testing.assert_allclose(logits, manual.numpy(), rtol=1e-5, atol=1e-5)


def test_video_judge_resamples_frames(trained):
    root, _, _ = trained
    _, judge = load_synth_judges(root)
    stimuli = open_stimuli(root)
    clips12 = np.stack([stimuli.clip("test1", t, 12) for t in range(3)])  # (3, 12, 32, 32, 3)
    clips6 = np.stack([stimuli.clip("test1", t, 6) for t in range(3)])
    assert judge.preprocess(clips12).shape == (3, 6 * 3, 32, 32)  # ResNet: frames as channels
    np.testing.assert_array_equal(judge.logits(clips12), judge.logits(clips6))
    np.testing.assert_array_equal(judge.logits(clips12), judge.logits(clips12[:, ::2]))
    assert judge.logits(clips12).shape == (3, 80)


def test_judge_refuses_wrong_input(trained):
    root, _, _ = trained
    frame, video = load_synth_judges(root)
    x = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(DataError, match="uint8"):
        frame.logits(x.astype(np.float32))
    with pytest.raises(DataError, match="clips"):
        video.logits(x)


# --- the real-checkpoint path ----------------------------------------------------------------


def test_real_format_vit_honours_preprocessor(tmp_path):
    pre = {"do_normalize": True, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD}
    folder = tiny_vit_judge(tmp_path / "vit", preprocessor=pre)
    judge = load_judge(folder, "frame")
    assert judge.num_classes == 1000 and judge.mean == tuple(IMAGENET_MEAN)
    x = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    logits = judge.logits(x)
    assert logits.shape == (3, 1000)
    with torch.no_grad():
        manual = judge.model(pixel_values=_normalise(x, IMAGENET_MEAN, IMAGENET_STD, 32)).logits
        half = judge.model(pixel_values=_normalise(x, [0.5] * 3, [0.5] * 3, 32)).logits
    np.testing.assert_allclose(logits, manual.numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(logits, half.numpy(), atol=1e-3)

    # Without preprocessor_config.json: mean = std = 0.5.
    (folder / "preprocessor_config.json").unlink()
    np.testing.assert_allclose(load_judge(folder, "frame").logits(x), half.numpy(), atol=1e-5)


def test_real_format_videomae_resamples_and_normalises(tmp_path):
    judge = load_judge(tiny_videomae_judge(tmp_path / "videomae"), "video")
    assert judge.num_classes == 400 and judge.num_frames == 4 and judge.std == tuple(IMAGENET_STD)
    clips = np.random.default_rng(0).integers(0, 256, (2, 8, 32, 32, 3), dtype=np.uint8)
    logits = judge.logits(clips)
    assert logits.shape == (2, 400)
    picked = clips[:, [0, 2, 4, 6]].reshape(-1, 32, 32, 3)
    pixels = _normalise(picked, IMAGENET_MEAN, IMAGENET_STD, 32).reshape(2, 4, 3, 32, 32)
    with torch.no_grad():
        manual = judge.model(pixel_values=pixels).logits
    np.testing.assert_allclose(logits, manual.numpy(), rtol=1e-5, atol=1e-5)


# --- errors ----------------------------------------------------------------------------------


def test_load_errors_name_the_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere.*not found"):
        load_judge(missing, "frame")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty: no config.json"):
        load_judge(empty, "frame")
    vit = tiny_vit_judge(tmp_path / "vit_folder")
    with pytest.raises(DataError, match="vit_folder.*VideoMAEForVideoClassification"):
        load_judge(vit, "video")
    videomae = tiny_videomae_judge(tmp_path / "videomae_folder")
    with pytest.raises(DataError, match="videomae_folder.*ViTForImageClassification"):
        load_judge(videomae, "frame")
    with pytest.raises(ConfigError, match="frame' or 'video"):
        load_judge(vit, "image")
    (vit / "model.safetensors").unlink()
    with pytest.raises(DataError, match="vit_folder: cannot load"):
        load_judge(vit, "frame")


def test_untrained_synth_judges(smoke_dataset):
    with pytest.raises(DataError, match="judges.*train them first"):
        load_synth_judges(smoke_dataset)


# --- augmentation keeps labels right ---------------------------------------------------------


def _moving_square(direction: int) -> np.ndarray:
    """A clip (1, 6, 32, 32, 3) of a white square moving 2 px per frame in `direction`."""
    angle = np.radians(45 * direction)
    step = np.array([-np.sin(angle), np.cos(angle)]) * 2  # (row, col) per frame, screen coords
    clip = np.zeros((1, 6, 32, 32, 3), dtype=np.uint8)
    for t in range(6):
        r, c = np.round(np.array([13.0, 11.0]) + step * t).astype(int)
        clip[0, t, r : r + 4, c : c + 4] = 255
    return clip


def _direction_of(clip: torch.Tensor) -> int:
    """Motion direction index (0..7) of the bright blob from its first to last centroid."""
    mass = clip[0, ..., 0].float()  # (T, H, W)
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    first = [float((mass[0] * g).sum() / mass[0].sum()) for g in (rows, cols)]
    last = [float((mass[-1] * g).sum() / mass[-1].sum()) for g in (rows, cols)]
    angle = np.degrees(np.arctan2(first[0] - last[0], last[1] - first[1]))
    return int(round(angle / 45)) % 8


@pytest.mark.parametrize("ops", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1), (1, 0, 1)])
def test_dihedral_moves_direction_labels_with_the_clip(ops):
    for shape in (0, 3):
        for direction in range(8):
            clip = torch.from_numpy(_moving_square(direction))
            label = torch.tensor([shape * 8 + direction])
            assert _direction_of(clip) == direction
            out, new = dihedral(clip, label, "video", *map(bool, ops))
            assert int(new) // 8 == shape
            assert int(new) % 8 == _direction_of(out)
            frames, same = dihedral(clip[:, 0], label, "frame", *map(bool, ops))
            assert int(same) == int(label) and frames.shape == (1, 32, 32, 3)


def test_transformer_judges_train_and_load(smoke_dataset, tmp_path_factory):
    root = _copy(smoke_dataset, tmp_path_factory, "transformers")
    metrics = train_synth_judges(root, SMALL_TRANSFORMERS)
    frame, video = load_synth_judges(root)
    assert frame.model.config.model_type == "vit" and video.model.config.model_type == "videomae"
    assert 0 <= metrics["frame_judge_top1"] <= 1
    clips = np.stack([open_stimuli(root).clip("test1", t, 6) for t in range(3)])
    assert video.logits(clips).shape == (3, 80)
