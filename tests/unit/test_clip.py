"""The synthetic-domain CLIP: training, caching, loading ours and open_clip checkpoints, errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from conftest import TINY_CLIP_ARCH as TINY_ARCH
from pydantic import ValidationError
from safetensors.torch import load_file

from mindvideo.errors import ConfigError, DataError
from mindvideo.models.clip import (
    MODEL_CONFIG_FILE,
    WEIGHTS_FILE,
    ClipConfig,
    ClipModel,
    build_clip,
    build_tokenizer,
    evaluate_clip,
    frames_to_pixels,
    load_clip,
    model_config,
)
from mindvideo.train.clip import caption_positives, contrastive_loss, sub_caption, train_domain_clip

# Small enough to train on the smoke dataset (32 px) in a few seconds on one core.
SMALL = ClipConfig(
    vision_width=8,
    embed_dim=32,
    text_width=32,
    text_layers=1,
    text_heads=2,
    epochs=8,
    frame_stride=1,
)
# Chance is 1/80 top-1 and 5/80 top-5; colour alone (8 colours) reaches at most ~0.1 / ~0.5.
MIN_TOP1, MIN_TOP5 = 0.06, 0.2

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stimuli_root(smoke_dataset, tmp_path_factory) -> Path:
    """The smoke dataset's stimuli in a private folder (training writes <root>/clip/)."""
    root = tmp_path_factory.mktemp("clip") / "synthcc"
    root.mkdir()
    shutil.copy(smoke_dataset / "dataset.json", root / "dataset.json")
    shutil.copytree(smoke_dataset / "stimuli", root / "stimuli")
    (root / "subject1" / "fmri").mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def trained(stimuli_root) -> tuple[Path, dict]:
    return stimuli_root, train_domain_clip(stimuli_root, SMALL)


@pytest.fixture(scope="module")
def registered_arch(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("arch")
    (folder / "mvbench-test-tiny.json").write_text(json.dumps(TINY_ARCH))
    other = {**TINY_ARCH, "embed_dim": 24}
    (folder / "mvbench-test-other.json").write_text(json.dumps(other))
    open_clip.add_model_config(folder)
    return "mvbench-test-tiny"


@pytest.mark.slow  # trains the CLIP (16 s); the foundation stage trains it in the default run
def test_training_writes_the_model_and_beats_chance(trained):
    root, metrics = trained
    folder = root / "clip"
    for name in (WEIGHTS_FILE, MODEL_CONFIG_FILE, "open_clip_config.json", "metrics.json"):
        assert (folder / name).is_file(), name
    assert not list(root.glob(".clip.*")), "temporary folders left behind"
    on_disk = json.loads((folder / "metrics.json").read_text())
    assert on_disk == metrics
    assert metrics["config"] == SMALL.model_dump(mode="json")
    assert metrics["seed"] == SMALL.seed
    assert metrics["clip_zeroshot_top1"] > MIN_TOP1
    assert metrics["clip_zeroshot_top5"] > MIN_TOP5
    assert metrics["clip_zeroshot_top5"] >= metrics["clip_zeroshot_top1"]
    model_cfg = json.loads((folder / MODEL_CONFIG_FILE).read_text())
    assert set(model_cfg) == {"embed_dim", "vision_cfg", "text_cfg"}
    assert model_cfg == model_config(SMALL, 32)


@pytest.mark.slow  # trains the CLIP (16 s); the foundation stage trains it in the default run
def test_an_untrained_model_stays_below_the_threshold(trained):
    root, _ = trained
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = build_clip(SMALL)
    clip = ClipModel(model, build_tokenizer(SMALL.context_length), 32, (0.5,) * 3, (0.25,) * 3)
    metrics = evaluate_clip(clip, root)
    assert metrics["clip_zeroshot_top1"] < MIN_TOP1
    assert metrics["clip_zeroshot_top5"] < MIN_TOP5


@pytest.mark.slow  # trains the CLIP (16 s); the foundation stage trains it in the default run
def test_round_trip_reproduces_training_metrics_and_embeddings(trained, tmp_path):
    root, metrics = trained
    clip = load_clip(root / "clip")
    assert isinstance(clip.model, open_clip.CLIP)
    again = evaluate_clip(clip, root)
    for key in ("clip_zeroshot_top1", "clip_zeroshot_top5", "clip_retrieval_top1"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-9), key

    frames = np.load(root / "stimuli" / "test1.npy")[:20]
    texts = ["a red circle", "a small striped blue star moves up slowly over noise"]
    images, captions = clip.image_embeddings(frames, batch_size=7), clip.text_embeddings(texts)
    assert images.shape == (20, SMALL.embed_dim) and images.dtype == np.float32
    assert captions.shape == (2, SMALL.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(captions, axis=1), 1.0, atol=1e-5)
    reloaded = load_clip(root / "clip")
    np.testing.assert_array_equal(reloaded.image_embeddings(frames, batch_size=7), images)
    np.testing.assert_array_equal(reloaded.text_embeddings(texts), captions)
    np.testing.assert_allclose(clip.image_embeddings(frames), images, atol=1e-6)  # any batching
    assert clip.image_embeddings(frames[:0]).shape == (0, SMALL.embed_dim)

    # The folder is also an open_clip local-dir model: open_clip's own loader agrees.
    local = tmp_path / "local"
    shutil.copytree(root / "clip", local)
    (local / MODEL_CONFIG_FILE).unlink()
    via_open_clip = load_clip(local)
    np.testing.assert_allclose(via_open_clip.image_embeddings(frames), images, atol=1e-6)
    np.testing.assert_allclose(via_open_clip.text_embeddings(texts), captions, atol=1e-6)


@pytest.mark.slow  # trains the CLIP (16 s); the foundation stage trains it in the default run
def test_frames_of_another_size_are_resized(trained):
    root, _ = trained
    clip = load_clip(root / "clip")
    frames = np.random.default_rng(0).integers(0, 256, (3, 48, 40, 3), dtype=np.uint8)
    assert clip.image_embeddings(frames).shape == (3, SMALL.embed_dim)
    with pytest.raises(DataError, match="uint8"):
        clip.image_embeddings(frames.astype(np.float32))


def test_open_clip_checkpoint_loads_through_create_model_and_transforms(registered_arch, tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        reference = open_clip.create_model(registered_arch)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(reference.state_dict(), checkpoint)

    clip = load_clip(checkpoint, model_name=registered_arch)
    assert clip.image_size == 32 and clip.mean == open_clip.OPENAI_DATASET_MEAN
    frames = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    texts = ["a red circle", "a blue star"]
    reference.eval()
    with torch.no_grad():
        pixels = frames_to_pixels(
            frames, 32, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
        )
        want_images = reference.encode_image(pixels, normalize=True).numpy()
        tokens = open_clip.get_tokenizer(registered_arch)(texts)
        want_texts = reference.encode_text(tokens, normalize=True).numpy()
    np.testing.assert_allclose(clip.image_embeddings(frames), want_images, atol=1e-6)
    np.testing.assert_allclose(clip.text_embeddings(texts), want_texts, atol=1e-6)


def test_load_errors(registered_arch, tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_clip(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="model_config.json"):
        load_clip(tmp_path / "empty")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = open_clip.create_model(registered_arch).state_dict()
    checkpoint = tmp_path / "tiny.pt"
    torch.save(state, checkpoint)
    with pytest.raises(DataError, match="model_name"):
        load_clip(checkpoint)
    with pytest.raises(DataError, match="ViT-L-14") as err:
        load_clip(checkpoint, model_name="ViT-L-14x")
    assert "not an open_clip model name" in str(err.value)
    with pytest.raises(DataError, match="does not fit"):
        load_clip(checkpoint, model_name="mvbench-test-other")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="garbage.pt"):
        load_clip(garbage, model_name=registered_arch)


@pytest.mark.slow  # trains the CLIP (16 s); the foundation stage trains it in the default run
def test_our_folder_with_wrong_weights_is_refused(trained, tmp_path):
    root, _ = trained
    folder = tmp_path / "clip"
    shutil.copytree(root / "clip", folder)
    model_cfg = json.loads((folder / MODEL_CONFIG_FILE).read_text())
    model_cfg["embed_dim"] = 48
    (folder / MODEL_CONFIG_FILE).write_text(json.dumps(model_cfg))
    with pytest.raises(DataError, match="does not fit"):
        load_clip(folder)


def test_same_seed_same_weights(stimuli_root, tmp_path):
    root = tmp_path / "synthcc"
    shutil.copytree(stimuli_root, root, ignore=shutil.ignore_patterns("clip"))
    cfg = SMALL.model_copy(update={"epochs": 1, "frame_stride": 4})

    def weights(c: ClipConfig) -> dict[str, torch.Tensor]:
        train_domain_clip(root, c)
        return load_file(str(root / "clip" / WEIGHTS_FILE))

    first, second = weights(cfg), weights(cfg)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = weights(cfg.model_copy(update={"seed": 1}))
    assert not torch.equal(first["text_projection"], other["text_projection"])


def test_training_needs_synthcc_annotations(tmp_path):
    root = tmp_path / "real"
    (root / "subject1" / "fmri").mkdir(parents=True)
    with pytest.raises(DataError, match="segments.train"):
        train_domain_clip(root, SMALL)


def test_contrastive_loss_known_values():
    # Identical embeddings: every softmax is uniform, so each direction costs log(candidates).
    same = torch.nn.functional.normalize(torch.ones(5, 4), dim=1)
    positives = torch.tensor([[True, False, True], [False, True, False]])  # 2 texts, 3 frames
    loss = contrastive_loss(same[:3], same[:2], positives, torch.tensor(10.0))
    assert loss.item() == pytest.approx(0.5 * (math.log(2) + math.log(3)), rel=1e-6)

    # Two frames of one scene and their caption: frame -> caption is certain (0); caption ->
    # frames spreads its target over both, which the equal scores already do (entropy log 2).
    # A diagonal-only target would instead push one of the duplicates away.
    loss = contrastive_loss(same[:2], same[:1], torch.tensor([[True, True]]), torch.tensor(10.0))
    assert loss.item() == pytest.approx(0.5 * math.log(2), rel=1e-6)

    # One positive per row reduces to open_clip's ClipLoss.
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    b = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    ours = contrastive_loss(a, b, torch.eye(4, dtype=torch.bool), torch.tensor(10.0))
    theirs = open_clip.ClipLoss()(a, b, torch.tensor(10.0))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)


def test_sub_captions_and_their_positives():
    rng = np.random.default_rng(0)
    caption = "a small striped red triangle moves left slowly over stripes"
    for _ in range(20):
        short = sub_caption(caption, (1, 4), rng)
        words = short.split()
        assert 1 <= len(words) <= 4
        order = [caption.split().index(w) for w in words]
        assert order == sorted(order)
    captions = [caption, "a large blue star moves up quickly over noise"]
    got = caption_positives(["red triangle", "a moves", "blue triangle", caption], captions)
    assert got.tolist() == [[True, False], [True, True], [False, False], [True, False]]


def test_frames_to_pixels_resizes_and_normalises():
    white = np.full((2, 40, 60, 3), 255, dtype=np.uint8)
    x = frames_to_pixels(white, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert x.shape == (2, 3, 32, 32)
    torch.testing.assert_close(x, torch.full_like(x, 2.0))
    squash = frames_to_pixels(white, (16, 24), (0.0,) * 3, (1.0,) * 3, resize_mode="squash")
    assert squash.shape == (2, 3, 16, 24)
    pad = frames_to_pixels(white, 32, (0.0,) * 3, (1.0,) * 3, resize_mode="longest")
    assert pad[0, :, 0, 0].tolist() == [0.0, 0.0, 0.0]
    assert pad[0, :, 16, 16].tolist() == pytest.approx([1.0] * 3)


def test_config_validation():
    with pytest.raises(ValidationError):
        ClipConfig(text_width=30, text_heads=4)
    with pytest.raises(ValidationError):
        ClipConfig(image_size=48)  # the ResNet's stride is 32
    with pytest.raises(ValidationError):
        ClipConfig(lr_typo=1.0)
    with pytest.raises(ValidationError):
        ClipConfig(sub_caption_words=(3, 2))
    vit = ClipConfig(vision_layers=2, vision_width=32, vision_heads=4, image_size=48, patch_size=8)
    assert isinstance(build_clip(vit).visual, open_clip.transformer.VisionTransformer)
    with pytest.raises(ConfigError, match="patch_size"):
        model_config(vit.model_copy(update={"image_size": None}), 44)
