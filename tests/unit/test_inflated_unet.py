"""The inflated UNet: equal to the image UNet frame by frame when fresh with `none`; frame
attention uses exactly the frames it names; temporal layers start silent and then act, at
either placement (post_transformer, in_block: MinD-Video's public UNet)."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from torch import nn

from harness.cache import key_config
from harness.plan import stage_config
from harness.profiles import load_profile
from mindvideo.errors import DataError
from mindvideo.models.diffusion_config import GeneratorConfig
from mindvideo.models.inflated_unet import (
    GENERATOR_FILE,
    TEMPORAL_LAYERS,
    BlockTemporal,
    ConditionAttention,
    FrameAttnProcessor,
    FrameState,
    InflatedUNet,
    TemporalAttention,
    key_frames,
    load_pretrained,
    save_generator_file,
)
from mindvideo.stages.registry import get_stage

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


def zero_in_block_biases(video: InflatedUNet) -> None:
    """in_block's fresh output bias (the one thing a fresh in_block layer adds) set to zero."""
    with torch.no_grad():
        for module in video.modules():
            if isinstance(module, BlockTemporal):
                module.attn.to_out[0].bias.zero_()


@pytest.mark.parametrize("condition", [False, True])
@pytest.mark.parametrize("placement", TEMPORAL_LAYERS)
def test_fresh_inflated_unet_with_none_is_the_image_unet_per_frame(placement, condition):
    """Fresh temporal layers are silent, and so is their cross-attention to the condition
    (temporal_condition)."""
    image = tiny_unet()
    video = InflatedUNet(
        tiny_unet(), "none", temporal_layer=placement, temporal_condition=condition
    )
    assert video.temporal_parameters()  # the temporal layers exist, with zero output weights
    temporal = [m for m in video.modules() if isinstance(m, BlockTemporal | TemporalAttention)]
    layers = [m for m in video.modules() if isinstance(m, ConditionAttention)]
    assert len(temporal) == 4 and len(layers) == (4 if condition else 0)  # one per layer
    assert all(m.attn.to_k.in_features == 12 for m in layers)  # the 12-wide condition
    if placement == "in_block":
        zero_in_block_biases(video)  # the public init keeps this bias (next test)
    sample, t, cond = inputs()
    with torch.no_grad():
        out = video(sample, t, cond)
        for f in range(FRAMES):
            expected = image(sample[:, :, f], t, encoder_hidden_states=cond).sample
            torch.testing.assert_close(out[:, :, f], expected, atol=1e-5, rtol=1e-5)
    assert video.state.condition is None  # not kept past the call


def test_fresh_in_block_layers_mix_no_frames():
    """MinD-Video's init zeroes only the output weight: a fresh in_block layer adds its bias,
    the same vector at every frame, so each output frame still depends on its own input only."""
    video = InflatedUNet(tiny_unet(), "none", temporal_layer="in_block")
    image = tiny_unet()
    sample, t, cond = inputs()
    with torch.no_grad():
        base = video(sample, t, cond)
        assert (
            base[:, :, 0] - image(sample[:, :, 0], t, encoder_hidden_states=cond).sample
        ).abs().max() > 1e-6
        for j in range(FRAMES):
            moved = sample.clone()
            moved[:, :, j] += 1.0
            changed = (video(moved, t, cond) - base).abs().amax(dim=(0, 1, 3, 4)) > 1e-6
            assert changed.tolist() == [i == j for i in range(FRAMES)]


def test_in_block_layers_sit_in_every_transformer_block_with_layernorm():
    unet = tiny_unet()
    blocks = sum(
        len(m.transformer_blocks) for m in unet.modules() if hasattr(m, "transformer_blocks")
    )
    video = InflatedUNet(unet, "prev2", temporal_layer="in_block")
    layers = [m for m in video.modules() if isinstance(m, BlockTemporal)]
    assert len(layers) == blocks > 0
    assert all(isinstance(m.norm, nn.LayerNorm) for m in layers)
    names = [n for n, _ in video.named_parameters() if ".temporal." in n]
    assert names and all(".transformer_blocks." in n for n in names)
    assert all(torch.count_nonzero(m.attn.to_out[0].weight) == 0 for m in layers)
    assert all(torch.count_nonzero(m.attn.to_out[0].bias) > 0 for m in layers)
    # frame attention still reaches the blocks' own self-attention
    processors = video.unet.attn_processors
    assert sum(isinstance(p, FrameAttnProcessor) for p in processors.values()) == blocks
    with pytest.raises(ValueError, match="post_transformer, in_block"):
        InflatedUNet(tiny_unet(), "prev2", temporal_layer="inside")


@pytest.mark.parametrize("placement", TEMPORAL_LAYERS)
def test_only_post_transformer_layers_know_frame_order(placement):
    """in_block has no frame positions: with frames processed alone otherwise (`none`),
    reversing the frames reverses the output; post_transformer's positions break that."""
    video = InflatedUNet(tiny_unet(), "none", temporal_layer=placement)
    with torch.no_grad():
        for p in video.temporal_parameters():
            p.add_(0.1 * torch.randn_like(p))
        sample, t, cond = inputs()
        out = video(sample, t, cond)
        flipped = video(sample.flip(2), t, cond).flip(2)
    same = torch.allclose(out, flipped, atol=1e-5, rtol=1e-5)
    assert same == (placement == "in_block")


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


@pytest.mark.parametrize("placement", TEMPORAL_LAYERS)
def test_sparse_causal_unet_never_looks_ahead(placement):
    video = InflatedUNet(tiny_unet(), frame_attention="prev2", temporal_layer=placement)
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


@pytest.mark.parametrize("placement", TEMPORAL_LAYERS)
def test_temporal_layers_act_once_trained(placement):
    video = InflatedUNet(tiny_unet(), "none", temporal_layers=True, temporal_layer=placement)
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


@pytest.mark.parametrize("placement", TEMPORAL_LAYERS)
def test_temporal_layers_read_the_condition_once_trained(placement):
    """With its condition attention trained, a temporal layer's output depends on the condition
    (beyond what the spatial cross-attention reads), and every one of its weights learns."""
    video = InflatedUNet(tiny_unet(), "none", temporal_layer=placement, temporal_condition=True)
    sample, t, cond = inputs()
    other = torch.randn(cond.shape, generator=torch.Generator().manual_seed(7))
    layers = [m for m in video.modules() if isinstance(m, ConditionAttention)]
    with torch.no_grad():
        silent = video(sample, t, cond) - video(sample, t, other)
        for layer in layers:
            for p in layer.parameters():
                p.add_(0.1 * torch.randn_like(p))
        heard = video(sample, t, cond) - video(sample, t, other)
    assert (heard - silent).abs().max() > 1e-4
    video(sample, t, cond).pow(2).mean().backward()
    cond_params = [p for layer in layers for p in layer.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cond_params)
    assert {id(p) for p in cond_params} <= {id(p) for p in video.temporal_parameters()}


def test_temporal_condition_needs_temporal_layers():
    with pytest.raises(ValueError, match="temporal_condition: true needs temporal layers"):
        GeneratorConfig(temporal_layers=False, temporal_condition=True)
    assert (
        InflatedUNet(
            tiny_unet(), "none", temporal_layers=False, temporal_condition=True
        ).temporal_parameters()
        == []
    )


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


# Recording the placement -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cotrain", "decode", "video_pretrain"])
def test_temporal_layer_is_key_neutral_at_post_transformer_only(name):
    """Entries cached before the option existed keep their keys; in_block gets its own."""
    profile = load_profile("tiny", {"video_pretrain.enabled": True})
    cfg = stage_config(name, profile, "subject1")
    neutral = get_stage(name).key_neutral
    dumped = key_config(cfg, neutral)
    assert "temporal_layer" not in dumped["generator"]
    assert "temporal_condition" not in dumped["generator"]
    for update in ({"temporal_layer": "in_block"}, {"temporal_condition": True}):
        changed = cfg.generator.model_copy(update=update)
        assert key_config(cfg.model_copy(update={"generator": changed}), neutral) != dumped
    paper = load_profile("paper")
    assert paper.generator.temporal_layer == "in_block"


def test_generator_file_records_placement_and_reads_older_files(tmp_path):
    plain, in_block = GeneratorConfig(), GeneratorConfig(temporal_layer="in_block")
    save_generator_file(tmp_path, plain)
    saved = json.loads((tmp_path / GENERATOR_FILE).read_text())["generator"]
    assert "temporal_layer" not in saved  # as entries written before the option
    (tmp_path / "unet.safetensors").write_bytes(b"")  # never read: the check comes first
    with pytest.raises(DataError, match="inflated as .*this run asks for .*in_block"):
        load_pretrained(tmp_path, in_block)
    save_generator_file(tmp_path, in_block)
    assert json.loads((tmp_path / GENERATOR_FILE).read_text())["generator"]["temporal_layer"] == (
        "in_block"
    )
    with pytest.raises(DataError, match="inflated as"):
        load_pretrained(tmp_path, plain)
