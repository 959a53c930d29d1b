"""Stage `diffusion`: the synthetic text-to-image model (trained at toy size on smoke) and the
real-weights path (a tiny SD-format folder written here with save_pretrained)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_sd_folder
from PIL import Image

from mindvideo.errors import ConfigError, DataError
from mindvideo.models import diffusion as D
from mindvideo.models.clip import load_captioned_frames
from mindvideo.models.clip_config import ClipConfig
from mindvideo.models.diffusion import load_diffusion
from mindvideo.models.diffusion_config import DiffusionConfig, UNetConfig, VAEConfig
from mindvideo.stages import diffusion
from mindvideo.stages.base import StageContext
from mindvideo.train.clip import train_domain_clip

TOY = DiffusionConfig(
    vae=VAEConfig(block_out_channels=(8, 8), norm_num_groups=4, steps=4, batch_size=4, crop=16),
    unet=UNetConfig(
        block_out_channels=(8, 16),
        cross_attention_levels=(True, False),
        attention_head_dim=4,
        norm_num_groups=4,
        steps=4,
        batch_size=4,
    ),
    samples=3,
    sample_steps=2,
)


@pytest.fixture(scope="module")
def foundation(smoke_dataset, tmp_path_factory):
    """A foundation folder holding only a barely trained synthetic CLIP."""
    folder = tmp_path_factory.mktemp("foundation")
    cfg = ClipConfig(epochs=1, frame_stride=8, text_width=16, text_heads=2, embed_dim=16)
    train_domain_clip(smoke_dataset, cfg, out=folder / "clip")
    return folder


def run(cfg, dataset, foundation, out):
    out.mkdir(parents=True, exist_ok=True)
    logged = []
    ctx = StageContext(log_metric=lambda n, v, s=None: logged.append((n, v, s)))
    inputs = {"dataset": dataset.parent, "foundation": foundation}
    return diffusion.run(cfg, inputs, out, ctx), logged


def test_trains_the_synthetic_model_reports_and_reloads(
    smoke_dataset, foundation, tmp_path, one_torch_thread
):
    result, logged = run(
        diffusion.DiffusionStageConfig(model=TOY), smoke_dataset, foundation, tmp_path / "a"
    )
    m = result.metrics
    for key in ("vae_psnr", "unet_val_loss", "unet_val_loss_uncond", "sample_class_top1"):
        assert np.isfinite(m[key]), key
    assert 0 <= m["sample_class_top1"] <= 1 and 0 < m["sample_chance"] < 1
    assert {n for n, _, _ in logged} >= {"vae_train_loss", "unet_train_loss"}
    sheet = Image.open(tmp_path / "a" / diffusion.SAMPLES)
    side = smoke_dataset_side(smoke_dataset)
    assert sheet.size == (3 * side, 2 * side)  # real frames over generated ones
    assert len(json.loads((tmp_path / "a" / "samples.json").read_text())) == 3
    model = load_diffusion(tmp_path / "a")
    assert model.cond_dim == 16  # the CLIP's text width
    assert model.scaling_factor == pytest.approx(m["scaling_factor"])
    again, _ = run(
        diffusion.DiffusionStageConfig(model=TOY), smoke_dataset, foundation, tmp_path / "b"
    )
    assert again.metrics["unet_val_loss"] == m["unet_val_loss"]  # seeded by the config
    assert again.metrics["vae_psnr"] == m["vae_psnr"]


def smoke_dataset_side(dataset) -> int:
    return int(load_captioned_frames(dataset, "test", 50).frames.shape[1])


def test_vae_psnr_and_latents_round_trip():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0, 0] = (
        255  # one value of 48 off by 255; the other pair is equal (error floored at 1e-10)
    )
    assert D.psnr(a, b) == pytest.approx((10 * np.log10(48) + 10 * np.log10(255**2 / 1e-10)) / 2)
    frames = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(D.to_frames(D.to_pixels(frames)), frames)


def test_real_weights_path_loads_an_sd_folder(tmp_path):
    written = write_sd_folder(tmp_path / "sd15")
    cfg = diffusion.DiffusionStageConfig(synthetic=False, pretrained=str(tmp_path / "sd15"))
    (tmp_path / "out").mkdir()
    result = diffusion.run(cfg, {}, tmp_path / "out", StageContext())
    assert result.metrics["cond_dim"] == 24
    loaded = load_diffusion(tmp_path / "out")
    for (k, v), w in zip(
        written.unet.state_dict().items(), loaded.unet.state_dict().values(), strict=True
    ):
        assert torch.equal(v, w), k
    assert loaded.scheduler.config.beta_schedule == "scaled_linear"


def test_real_weights_errors(tmp_path):
    with pytest.raises(ConfigError, match="set diffusion.pretrained"):
        diffusion.run(diffusion.DiffusionStageConfig(synthetic=False), {}, tmp_path, StageContext())
    (tmp_path / "half" / "vae").mkdir(parents=True)
    cfg = diffusion.DiffusionStageConfig(synthetic=False, pretrained=str(tmp_path / "half"))
    with pytest.raises(DataError, match="no unet, scheduler/"):
        diffusion.run(cfg, {}, tmp_path, StageContext())
    with pytest.raises(DataError, match="run the diffusion stage first"):
        load_diffusion(tmp_path)
