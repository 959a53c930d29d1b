"""The inflated UNet: equal to the image UNet frame by frame when fresh with `none`; frame
attention uses exactly the frames it names; temporal layers start silent and then act."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from mindvideo.models.inflated_unet import (
    FrameAttnProcessor,
    FrameState,
    InflatedUNet,
    key_frames,
)

FRAMES = 5


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=12,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def inputs(seed: int = 1, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, FRAMES, 8, 8, generator=g)  # (batch, channels, frames, h, w)
    cond = torch.randn(batch, 3, 12, generator=g)  # (batch, tokens, dim)
    return sample, torch.tensor([10, 500]), cond


def test_key_frames_known_values():
    assert key_frames("prev2", 4).tolist() == [[0, 0], [0, 0], [0, 1], [1, 2]]
    assert key_frames("first_prev", 4).tolist() == [[0, 0], [0, 0], [0, 1], [0, 2]]
    assert key_frames("full", 3).tolist() == [[0, 1, 2]] * 3
    assert key_frames("none", 3).tolist() == [[0], [1], [2]]
    with pytest.raises(ValueError, match="prev2, first_prev, full, none"):
        key_frames("causal", 3)


def test_fresh_inflated_unet_with_none_is_the_image_unet_per_frame():
    image = tiny_unet()
    video = InflatedUNet(tiny_unet(), frame_attention="none", temporal_layers=True)
    assert video.temporal_parameters()  # the temporal layers exist, with zero output weights
    sample, t, cond = inputs()
    with torch.no_grad():
        out = video(sample, t, cond)
        for f in range(FRAMES):
            expected = image(sample[:, :, f], t, encoder_hidden_states=cond).sample
            torch.testing.assert_close(out[:, :, f], expected, atol=1e-5, rtol=1e-5)


def _one_attention(mode: str):
    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4)
    state = FrameState()
    state.frames = FRAMES
    attn.set_processor(FrameAttnProcessor(mode, state))
    return attn


@pytest.mark.parametrize("mode", ["prev2", "first_prev", "full", "none"])
def test_frame_attention_reads_exactly_its_key_frames(mode):
    attn = _one_attention(mode)
    x = torch.randn(FRAMES, 6, 8)  # (batch 1 * frames, tokens, channels)
    with torch.no_grad():
        base = attn(x)
        for j in range(FRAMES):
            moved = x.clone()
            moved[j] += 1.0
            changed = (attn(moved) - base).abs().amax(dim=(1, 2)) > 1e-6  # per output frame
            reads = [j in key_frames(mode, FRAMES)[i].tolist() or i == j for i in range(FRAMES)]
            assert changed.tolist() == reads, (mode, j)


def test_frame_attention_equals_attention_over_the_named_frames():
    attn = _one_attention("prev2")
    x = torch.randn(FRAMES, 6, 8)
    with torch.no_grad():
        out = attn(x)
        i = 3  # attends to frames 1 and 2
        q = attn.to_q(x[i])
        kv = torch.cat([x[1], x[2]])
        k, v = attn.to_k(kv), attn.to_v(kv)
        heads = [
            torch.softmax(q[:, h * 4 : h * 4 + 4] @ k[:, h * 4 : h * 4 + 4].T / 2.0, dim=-1)
            @ v[:, h * 4 : h * 4 + 4]
            for h in range(2)
        ]
        expected = attn.to_out[0](torch.cat(heads, dim=1))
    torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=1e-5)


def test_sparse_causal_unet_never_looks_ahead():
    video = InflatedUNet(tiny_unet(), frame_attention="prev2")
    sample, t, cond = inputs()
    with torch.no_grad():
        base = video(sample, t, cond)
        later = sample.clone()
        later[:, :, -1] += 1.0
        out = video(later, t, cond)
        assert torch.equal(out[:, :, :-1], base[:, :, :-1])  # earlier frames untouched
        first = sample.clone()
        first[:, :, 0] += 1.0
        out = video(first, t, cond)
        assert (out - base).abs().amax(dim=(0, 1, 3, 4)).gt(1e-6).all()  # frame 0 reaches all


def test_temporal_layers_act_once_trained():
    video = InflatedUNet(tiny_unet(), frame_attention="none", temporal_layers=True)
    sample, t, cond = inputs()
    with torch.no_grad():
        base = video(sample, t, cond)
        for p in video.temporal_parameters():
            p.add_(0.05 * torch.randn_like(p))
        later = sample.clone()
        later[:, :, -1] += 1.0
        out = video(later, t, cond)
    # now frame 0 sees the last frame through the temporal layers (they are not causal)
    assert (out[:, :, 0] - base[:, :, 0]).abs().max() > 1e-6
    loss = video(sample, t, cond).pow(2).mean()
    loss.backward()
    assert all(p.grad is not None for p in video.temporal_parameters())


def test_inflated_unet_trains_on_one_frame_and_changes_mode():
    video = InflatedUNet(tiny_unet(), frame_attention="full", temporal_layers=False)
    assert not video.temporal_parameters()
    sample, t, cond = inputs(batch=1)
    out = video(sample[:, :, :1], t[:1], cond)  # one frame: plain attention
    assert out.shape == (1, 4, 1, 8, 8)
    video.set_frame_attention("prev2")
    assert video.frame_attention == "prev2"
    with pytest.raises(ValueError, match="choose one of"):
        video.set_frame_attention("all")
