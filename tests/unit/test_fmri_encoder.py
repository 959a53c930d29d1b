"""The spatiotemporal encoder: shapes, MBM initialisation, what the temporal attention mixes."""

from __future__ import annotations

import pytest
import torch

from mindvideo.models.fmri_encoder import EncoderConfig, FmriEncoder
from mindvideo.models.fmri_mae import FmriMAE, MAEConfig

MAE = MAEConfig(embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16, decoder_num_heads=2)


def build(temporal: bool = True, window: int = 3, n_voxels: int = 100, clip_dim=None):
    torch.manual_seed(0)
    cfg = EncoderConfig(temporal_attention=temporal, cond_tokens=5, cond_dim=24)
    return FmriEncoder(MAE, cfg, n_voxels=n_voxels, window=window, clip_dim=clip_dim)


def test_shapes(one_torch_thread):
    enc = build(clip_dim=16)
    x = torch.randn(4, 3, 100)  # 100 voxels -> 7 patches
    assert enc.features(x).shape == (4, 3, 7, 32)
    cond = enc(x)
    assert cond.shape == (4, 5, 24)
    emb = enc.clip_embedding(cond)
    assert emb.shape == (4, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(4))
    with pytest.raises(ValueError, match="windows of 3 frames x 100 voxels"):
        enc(torch.randn(4, 2, 100))


def test_mbm_initialisation_reproduces_the_mae_encoder_per_frame(one_torch_thread):
    torch.manual_seed(1)
    mae = FmriMAE(MAE)
    enc = build(temporal=True)
    fresh = enc.load_mbm(mae)
    assert any(k.startswith("blocks.0.temporal_attn") for k in fresh)
    assert "token_mix.weight" in fresh and not any(k.startswith("patch_embed") for k in fresh)
    x = torch.randn(2, 3, 100)
    with torch.no_grad():
        feats = enc.features(x)
        for k in range(3):
            torch.testing.assert_close(feats[:, k], mae.encode(x[:, k]), rtol=1e-5, atol=1e-5)


def test_temporal_attention_mixes_frames_only_when_on(one_torch_thread):
    x = torch.randn(2, 3, 100)
    y = x.clone()
    y[:, 2] += 1.0  # change only the last frame
    off = build(temporal=False)
    with torch.no_grad():
        torch.testing.assert_close(off.features(x)[:, 0], off.features(y)[:, 0])
    on = build(temporal=True)
    with torch.no_grad():
        for block in on.blocks:  # leave the zero initialisation
            block.temporal_attn.proj.weight.normal_(std=0.2)
        assert not torch.allclose(on.features(x)[:, 0], on.features(y)[:, 0])


def test_mbm_of_another_size_is_refused():
    mae = FmriMAE(MAE.model_copy(update={"embed_dim": 16, "num_heads": 2}))
    with pytest.raises(ValueError, match="sizes must match"):
        build().load_mbm(mae)


def test_paper_condition_shape():
    cfg = EncoderConfig.paper()
    assert (cfg.cond_tokens, cfg.cond_dim) == (77, 768)


def test_checkpointed_activations_give_the_same_gradients(one_torch_thread):
    """encoder.checkpoint_activations recomputes each block in the backward pass: the same
    output and gradients, and nothing recomputed (or kept) where no gradient is taken."""
    torch.manual_seed(0)
    enc = FmriEncoder(MAEConfig(embed_dim=32, depth=3, num_heads=4), EncoderConfig(), 64, 2)
    x = torch.randn(3, 2, 64)
    grads, outs = [], []
    for recompute in (False, True):
        enc.cfg = enc.cfg.model_copy(update={"checkpoint_activations": recompute})
        enc.zero_grad(set_to_none=True)
        out = enc(x)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append([p.grad for p in enc.parameters() if p.grad is not None])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    assert len(grads[0]) == len(grads[1]) > 10
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), outs[0], rtol=0, atol=0)
