"""The fMRI masked autoencoder: patching, positions, masking, the masked-only loss, learning."""

from __future__ import annotations

import pytest
import torch

from mindvideo.models.fmri_mae import FmriMAE, MAEConfig, sincos_positions, wrap_pad

TINY = MAEConfig(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_num_heads=2)


def test_wrap_pad_repeats_the_first_voxels():
    x = torch.arange(10.0)[None]
    padded = wrap_pad(x, 4)
    assert padded.shape == (1, 12) and padded[0, 10:].tolist() == [0.0, 1.0]
    assert wrap_pad(torch.arange(3.0)[None], 8)[0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert wrap_pad(x, 5) is x


def test_sincos_positions_known_values():
    pos = sincos_positions(5, 8)
    assert pos.shape == (5, 8)
    assert torch.allclose(pos[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert pos[3, 0] == pytest.approx(torch.sin(torch.tensor(3.0)).item(), abs=1e-6)
    assert pos[2, 5] == pytest.approx(torch.cos(torch.tensor(2.0 / 10000**0.25)).item())


def test_shapes_and_mask_ratio(one_torch_thread):
    torch.manual_seed(0)
    model = FmriMAE(TINY)
    x = torch.randn(3, 200)  # 200 voxels -> 13 patches of 16 (wrap-padded)
    loss, pred, mask = model(x, generator=torch.Generator().manual_seed(0))
    assert pred.shape == (3, 13, 16) and mask.shape == (3, 13)
    assert mask.sum(dim=1).tolist() == [10.0, 10.0, 10.0]  # 13 - round(13 * 0.25)
    assert loss.ndim == 0 and loss.item() > 0
    assert model.encode(x).shape == (3, 13, 32)
    assert model.encode(torch.randn(2, 64)).shape == (2, 4, 32)  # any length


def test_loss_only_sees_hidden_patches(one_torch_thread):
    torch.manual_seed(0)
    model = FmriMAE(TINY)
    x = torch.randn(2, 160)
    loss, pred, mask = model(x, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad(loss, pred)
    visible = mask == 0
    assert visible.any() and (grad[visible] == 0).all()
    assert (grad[~visible].abs().sum(dim=-1) > 0).all()
    target = model.patchify(x)
    expected = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert loss.item() == pytest.approx(expected.item())


def test_masks_follow_the_generator(one_torch_thread):
    model = FmriMAE(TINY)
    x = torch.randn(4, 320)
    _, _, a = model(x, generator=torch.Generator().manual_seed(5))
    _, _, b = model(x, generator=torch.Generator().manual_seed(5))
    _, _, c = model(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_learns_to_fill_in_structured_patches(one_torch_thread):
    """Voxel vectors from 3 latent factors: the hidden patches are predictable from the visible
    ones, so the masked loss must fall well below that of predicting zeros (about 1)."""
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(3, 128, generator=g)
    torch.manual_seed(0)
    model = FmriMAE(TINY.model_copy(update={"depth": 2}))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(400):
        x = torch.randn(32, 3, generator=g) @ basis / 3**0.5
        loss, _, _ = model(x, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[:10]) / 10 > 0.9
    assert sum(losses[-20:]) / 20 < 0.4


def test_config_checks_and_paper_sizes():
    with pytest.raises(ValueError, match="not a multiple"):
        MAEConfig(embed_dim=30, num_heads=4)
    paper = MAEConfig.paper()
    assert (paper.embed_dim, paper.depth, paper.num_heads, paper.mlp_ratio) == (1024, 24, 16, 1.0)
    assert (paper.decoder_embed_dim, paper.decoder_depth, paper.mask_ratio) == (512, 8, 0.75)


@pytest.mark.slow
def test_paper_size_forward_backward_on_cpu(one_torch_thread):
    model = FmriMAE(MAEConfig.paper())
    n_params = sum(p.numel() for p in model.parameters())
    assert 150e6 < n_params < 200e6
    loss, _, _ = model(torch.randn(1, 4656), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert model.patch_embed.proj.weight.grad is not None
