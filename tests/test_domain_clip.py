"""The synthetic-domain CLIP: training, caching, loading, and the real-checkpoint path."""

import json
import shutil

import numpy as np
import open_clip
import pytest
import torch

from mindvideo.data.cc2017 import open_stimuli
from mindvideo.errors import DataError
from mindvideo.models.clip import ClipConfig, load_clip, train_domain_clip

SMALL = ClipConfig(epochs=2, frame_stride=4)


@pytest.fixture(scope="module")
def trained(smoke_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("clip") / "synthcc"
    shutil.copytree(smoke_dataset, root)
    return root, train_domain_clip(root, SMALL)


def frames(root, n=8):
    return np.asarray(open_stimuli(root).frames("test1")[:n])


def test_training_writes_a_loadable_cached_model(trained):
    root, metrics = trained
    for key in ("clip_zeroshot_top1", "clip_zeroshot_top5", "clip_retrieval_top1"):
        assert 0.0 <= metrics[key] <= 1.0
    assert (root / "clip" / "metrics.json").exists()
    again = train_domain_clip(root, SMALL, progress=lambda n, w: pytest.fail("retrained"))
    assert again == metrics
    clip = load_clip(root / "clip")
    emb = clip.image_embeddings(frames(root))
    assert emb.shape == (8, clip.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        load_clip(root / "clip").image_embeddings(frames(root)), emb, atol=1e-6
    )
    text = clip.text_embeddings(["a red circle", "a blue star"])
    assert text.shape == (2, clip.embed_dim)


def test_real_checkpoint_path_goes_through_open_clip(trained, tmp_path):
    """A checkpoint file plus its open_clip architecture name, as for ViT-L-14 on real data."""
    root, _ = trained
    name = "mvbench-test-tiny"
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 32,
            "heads": 4,
            "layers": 1,
        },
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(name)
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(model.state_dict(), ckpt)
    clip = load_clip(ckpt, model_name=name)
    emb = clip.image_embeddings(frames(root, 4))
    assert emb.shape == (4, 32)
    with torch.no_grad():
        direct = model.eval().encode_image(clip.pixels(frames(root, 4)))
    direct = torch.nn.functional.normalize(direct, dim=-1).numpy()
    np.testing.assert_allclose(emb, direct, atol=1e-5)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="CLIP not found"):
        load_clip(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder has no model_config.json"):
        load_clip(tmp_path / "empty")
    ckpt = tmp_path / "x.pt"
    torch.save({}, ckpt)
    with pytest.raises(DataError, match="needs its open_clip architecture"):
        load_clip(ckpt)
    with pytest.raises(DataError, match="not an open_clip model name"):
        load_clip(ckpt, model_name="ViT-Q-99")
