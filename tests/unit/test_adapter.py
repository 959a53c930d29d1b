"""The condition adapter: ridge regression onto the generator's token states, and the encoder
that carries it through save, load and co-training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mindvideo.models.adapter import ConditionAdapter, fit_adapter, r2
from mindvideo.models.fmri_encoder import EncoderConfig, FmriEncoder, load_encoder, save_encoder
from mindvideo.models.fmri_mae import MAEConfig

MAE = MAEConfig(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8, decoder_num_heads=2)


def linear_data(n=300, noise=0.0, seed=0):
    """Conditions (n, 3, 4) and targets (n, 5, 2) = a fixed linear map of them + an offset."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3, 4)) + 2.0
    w = rng.normal(size=(12, 10))
    y = x.reshape(n, -1) @ w + 5.0 + noise * rng.normal(size=(n, 10))
    return x.astype(np.float32), y.reshape(n, 5, 2).astype(np.float32)


def test_fit_recovers_a_linear_map_and_generalises():
    x, y = linear_data()
    fit = fit_adapter(x[:250], y[:250], rank=64, alphas=(1e-6, 1.0, 100.0), val_fraction=0.2)
    assert fit.alpha == 1e-6  # noise-free: the smallest penalty wins on the held-out part
    assert fit.adapter.rank == 12  # capped by the conditions' dimension
    with torch.no_grad():
        pred = fit.adapter(torch.from_numpy(x[250:]))
    assert pred.shape == (50, 5, 2)
    assert r2(pred.double(), torch.from_numpy(y[250:]).double()) > 0.999


def test_noise_picks_a_larger_penalty_and_rank_truncates():
    x, y = linear_data(n=40, noise=30.0, seed=1)
    fit = fit_adapter(x, y, rank=64, alphas=(1e-6, 0.3, 3.0), val_fraction=0.25)
    assert fit.alpha > 1e-6 and fit.val_r2[fit.alpha] > fit.val_r2[1e-6]
    assert fit_adapter(x, y, rank=3, alphas=(0.1,), val_fraction=0.25).adapter.rank == 3


def test_bad_shapes_and_too_few_samples():
    adapter = ConditionAdapter((3, 4), (5, 2), rank=2)
    with pytest.raises(ValueError, match=r"reads conditions \(3, 4\), got \(4, 3\)"):
        adapter(torch.zeros(1, 4, 3))
    x, y = linear_data(n=2)
    with pytest.raises(ValueError, match="need at least 3"):
        fit_adapter(x, y, rank=4, alphas=(1.0,), val_fraction=0.5)


def test_encoder_with_adapter_saves_loads_and_trains(tmp_path):
    torch.manual_seed(0)
    enc = FmriEncoder(MAE, EncoderConfig(cond_tokens=3, cond_dim=4), 40, 2, clip_dim=6)
    fmri = torch.randn(30, 2, 40)
    with torch.no_grad():
        raw = enc(fmri).numpy()
    targets = np.random.default_rng(0).normal(size=(30, 7, 5)).astype(np.float32)
    enc.adapter = fit_adapter(raw, targets, 8, (0.1,), 0.2).adapter
    assert enc.cond_shape == (7, 5)
    with torch.no_grad():
        adapted = enc(fmri)
        assert adapted.shape == (30, 7, 5)
        assert np.allclose(enc.condition(fmri).numpy(), raw)  # contrastive's view unchanged
    save_encoder(tmp_path, enc, np.arange(40))
    loaded, voxels = load_encoder(tmp_path)
    assert loaded.cond_shape == (7, 5) and voxels.tolist() == list(range(40))
    with torch.no_grad():
        assert torch.allclose(loaded(fmri), adapted, atol=1e-6)
    # the adapter is part of the module: co-training's optimiser sees and moves it
    names = {n for n, _ in loaded.named_parameters()}
    assert {"adapter.basis", "adapter.coef", "adapter.in_mean", "adapter.out_mean"} <= names
    loaded.train()
    loaded(fmri).pow(2).mean().backward()
    assert loaded.adapter.coef.grad is not None and loaded.adapter.coef.grad.abs().sum() > 0


def test_generator_width_mismatch_names_the_fix():
    from types import SimpleNamespace

    from mindvideo.errors import ConfigError
    from mindvideo.models.inflated_unet import check_compatible

    enc = FmriEncoder(MAE, EncoderConfig(cond_tokens=3, cond_dim=4), 40, 2)
    model, cfg = SimpleNamespace(cond_dim=7), SimpleNamespace(window=2)
    with pytest.raises(ConfigError, match="encoder.cond_dim equal, or enable the align stage"):
        check_compatible(enc, model, cfg)
    enc.adapter = ConditionAdapter((3, 4), (6, 5), rank=2)
    with pytest.raises(ConfigError, match=r"5-wide CLIP token states .* reads 7-wide"):
        check_compatible(enc, model, cfg)
    check_compatible(enc, SimpleNamespace(cond_dim=5), cfg)  # the adapter's width: fine
