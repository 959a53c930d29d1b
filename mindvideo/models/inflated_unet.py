"""Temporal inflation of a diffusers 2D UNet: a text-to-image UNet that denoises video.

MinD-Video's "network temporal inflation", built on an unmodified `UNet2DConditionModel`:
- frames are folded into the batch, so every 2D convolution runs frame by frame;
- the self-attention of each spatial transformer block becomes frame-to-frame attention through
  an attention processor (`FrameAttnProcessor`): the queries of frame i attend to the keys and
  values of other frames, chosen by `frame_attention`:
    prev2       frames i-2 and i-1, clamped at 0 (sparse causal attention; MinD-Video),
    first_prev  the first frame and frame i-1 (clamped),
    full        every frame,
    none        frame i itself: the image model applied to each frame independently;
- a temporal attention layer lets every pixel (token) attend across the frames, placed as
  `temporal_layer` says:
    post_transformer  after each whole spatial transformer (`TemporalAttention`): GroupNorm,
                      sinusoidal frame positions, output projection (weight and bias) zero at
                      init, so a freshly inflated UNet computes exactly what the image UNet does;
    in_block          inside each transformer block after its feed-forward (`BlockTemporal`), as
                      MinD-Video's public UNet places it: LayerNorm, no frame positions, only the
                      output projection's weight zero at init (its bias keeps the default draw,
                      so a fresh layer adds the same small vector to every frame: it mixes no
                      frames, but the output is the image UNet's only up to that shift).
  With `temporal_condition`, each temporal layer also attends to the condition tokens after its
  attention over the frames (`ConditionAttention`; its query carries the frame position where
  the layer has positions), with its output weight zero at init: the caption, or the fMRI
  condition, can then steer how the frames change, not only what each frame shows. MinD-Video's
  UNet reads the condition in the spatial cross-attention only.
The condition (tokens, dim) is shared by every frame of a clip.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

from mindvideo.errors import ConfigError, DataError
from mindvideo.models.diffusion_config import GeneratorConfig, generator_record

FrameAttention = Literal["prev2", "first_prev", "full", "none"]
FRAME_ATTENTION: tuple[str, ...] = ("prev2", "first_prev", "full", "none")
TEMPORAL_LAYERS: tuple[str, ...] = ("post_transformer", "in_block")


def key_frames(mode: str, frames: int) -> torch.Tensor:
    """(frames, m) indices: the frames whose keys and values frame i's queries attend to."""
    i = torch.arange(frames)
    if mode == "prev2":
        return torch.stack([(i - 2).clamp(min=0), (i - 1).clamp(min=0)], dim=1)
    if mode == "first_prev":
        return torch.stack([torch.zeros_like(i), (i - 1).clamp(min=0)], dim=1)
    if mode == "full":
        return i.expand(frames, frames)
    if mode == "none":
        return i[:, None]
    raise ValueError(f"frame attention {mode!r}: choose one of {', '.join(FRAME_ATTENTION)}")


class FrameState:
    """The number of frames and the condition of the current call, shared by the processors and
    temporal layers of one inflated UNet (they see (batch * frames, ...) tensors)."""

    frames: int = 1
    condition: torch.Tensor | None = None  # (batch, tokens, dim), one per clip


class FrameAttnProcessor:
    """Self-attention across frames: the queries of frame i, the keys and values of
    key_frames(mode)[i]. Cross-attention (an encoder state given) is left as it is."""

    def __init__(self, mode: str, state: FrameState):
        key_frames(mode, 1)  # validates the name
        self.mode, self.state = mode, state
        self._plain = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        frames = self.state.frames
        if self.mode == "none" or encoder_hidden_states is not None or frames == 1:
            return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if attention_mask is not None or attn.group_norm is not None or hidden_states.ndim != 3:
            raise ValueError("frame attention supports the UNet's token self-attention only")
        residual = hidden_states
        bf, n, _ = hidden_states.shape  # (batch * frames, tokens, channels)
        if bf % frames:
            raise ValueError(
                f"frame attention: a batch of {bf} images is not clips of {frames} frames; call "
                "the InflatedUNet (batch, channels, frames, h, w), not the UNet inside it"
            )
        b = bf // frames
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        idx = key_frames(self.mode, frames).to(hidden_states.device)  # (frames, m)
        m, inner = idx.shape[1], key.shape[-1]

        def gather(x: torch.Tensor) -> torch.Tensor:
            x = x.view(b, frames, n, inner)[:, idx]  # (batch, frames, m, tokens, inner)
            return x.reshape(bf, m * n, inner)

        key, value = gather(key), gather(value)
        head = inner // attn.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(bf, -1, attn.heads, head).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(query), split(key), split(value))
        out = out.transpose(1, 2).reshape(bf, n, inner).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def frame_positions(frames: int, dim: int) -> torch.Tensor:
    """(frames, dim) fixed sin-cos encoding of the frame index."""
    pos = torch.arange(frames, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    table = torch.zeros(frames, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class ConditionAttention(nn.Module):
    """Cross-attention from every token of every frame to its clip's condition tokens (the
    temporal layers' `temporal_condition`); returns the residual to add (zero at init).

    Cross-attention mixes no queries, so the (batch, frames * tokens, channels) queries of a clip
    attend to its condition directly: the condition is never repeated per frame or per pixel."""

    def __init__(self, channels: int, heads: int, cond_dim: int, state: FrameState):
        super().__init__()
        self.state = state
        self.norm = nn.LayerNorm(channels)
        self.attn = Attention(
            query_dim=channels,
            cross_attention_dim=cond_dim,
            heads=heads,
            dim_head=channels // heads,
        )
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)

    def forward(self, y: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """y: (batch, frames, tokens, channels); positions: (frames, channels) or None."""
        cond = self.state.condition
        if cond is None:
            raise ValueError("temporal_condition: a temporal layer was called with no condition")
        b, f, n, c = y.shape
        q = self.norm(y)
        if positions is not None:
            q = q + positions[None, :, None, :].to(q)
        out = self.attn(q.reshape(b, f * n, c), encoder_hidden_states=cond.to(q))
        return out.view(b, f, n, c)


class TemporalAttention(nn.Module):
    """Attention over the frames at each pixel, then (with `cond_dim`) to the condition tokens;
    returns the residual to add (zero at init)."""

    def __init__(
        self,
        channels: int,
        heads: int,
        state: FrameState,
        groups: int = 32,
        cond_dim: int | None = None,
    ):
        super().__init__()
        self.state = state
        self.norm = nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6)
        self.attn = Attention(query_dim=channels, heads=heads, dim_head=channels // heads)
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)
        self.cond = (
            None if cond_dim is None else ConditionAttention(channels, heads, cond_dim, state)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.state.frames
        bf, c, h, w = x.shape  # (batch * frames, channels, height, width)
        b = bf // frames
        y = self.norm(x).view(b, frames, c, h * w).permute(0, 3, 1, 2)  # (b, hw, frames, c)
        positions = frame_positions(frames, c).to(y)
        y = self.attn((y + positions).reshape(b * h * w, frames, c))
        y = y.view(b, h * w, frames, c).transpose(1, 2)  # (b, frames, hw, c)
        if self.cond is not None:
            tokens = x.view(b, frames, c, h * w).transpose(2, 3) + y  # (b, frames, hw, c)
            y = y + self.cond(tokens, positions)
        return y.permute(0, 1, 3, 2).reshape(bf, c, h, w)


class BlockTemporal(nn.Module):
    """Attention over the frames at each token of a transformer block's output (in_block), then
    (with `cond_dim`) to the condition tokens; returns the residual to add."""

    def __init__(self, channels: int, heads: int, state: FrameState, cond_dim: int | None = None):
        super().__init__()
        self.state = state
        self.norm = nn.LayerNorm(channels)
        self.attn = Attention(query_dim=channels, heads=heads, dim_head=channels // heads)
        nn.init.zeros_(self.attn.to_out[0].weight)
        self.cond = (
            None if cond_dim is None else ConditionAttention(channels, heads, cond_dim, state)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.state.frames
        bf, n, c = x.shape  # (batch * frames, tokens, channels)
        b = bf // frames
        y = self.norm(x).view(b, frames, n, c).transpose(1, 2).reshape(b * n, frames, c)
        y = self.attn(y).view(b, n, frames, c).transpose(1, 2)  # (b, frames, tokens, c)
        if self.cond is not None:
            y = y + self.cond(x.view(b, frames, n, c) + y)
        return y.reshape(bf, n, c)


class InflatedBlock(nn.Module):
    """A spatial transformer's block (attention, cross-attention, feed-forward) followed by its
    temporal attention layer (in_block)."""

    def __init__(self, spatial: nn.Module, temporal: BlockTemporal):
        super().__init__()
        self.spatial, self.temporal = spatial, temporal

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.spatial(hidden_states, *args, **kwargs)
        return out + self.temporal(out)


class InflatedTransformer(nn.Module):
    """A UNet block's spatial transformer followed by its temporal attention layer."""

    def __init__(self, spatial: Transformer2DModel, temporal: TemporalAttention | None):
        super().__init__()
        self.spatial, self.temporal = spatial, temporal

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        out = self.spatial(hidden_states, *args, **kwargs)
        if self.temporal is None:
            return out
        sample = out[0] if isinstance(out, tuple) else out.sample
        sample = sample + self.temporal(sample)
        return (sample,) if isinstance(out, tuple) else type(out)(sample=sample)


def _transformer_slots(unet: UNet2DConditionModel):
    """(ModuleList, index) of every spatial transformer of the UNet's blocks."""
    blocks = [*unet.down_blocks, *([unet.mid_block] if unet.mid_block is not None else [])]
    for block in [*blocks, *unet.up_blocks]:
        for i, module in enumerate(getattr(block, "attentions", None) or []):
            if isinstance(module, Transformer2DModel | InflatedTransformer):
                yield block.attentions, i


class InflatedUNet(nn.Module):
    """A 2D conditional UNet that denoises clips: sample (batch, channels, frames, h, w),
    condition (batch, tokens, dim), one timestep per clip."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        frame_attention: str = "prev2",
        temporal_layers: bool = True,
        temporal_heads: int = 8,
        temporal_layer: str = "post_transformer",
        temporal_condition: bool = False,
    ):
        super().__init__()
        if temporal_layer not in TEMPORAL_LAYERS:
            raise ValueError(
                f"temporal layer {temporal_layer!r}: choose one of {', '.join(TEMPORAL_LAYERS)}"
            )
        self.unet = unet
        self.state = FrameState()
        self.temporal_layers = temporal_layers
        self.temporal_layer = temporal_layer
        self.temporal_condition = temporal_layers and temporal_condition
        cond_dim = unet.config.cross_attention_dim if self.temporal_condition else None
        in_block = temporal_layers and temporal_layer == "in_block"
        for slots, i in list(_transformer_slots(unet)):
            spatial = slots[i]
            temporal = None
            if in_block:
                blocks = spatial.transformer_blocks
                for j, block in enumerate(blocks):
                    width = block.norm1.normalized_shape[0]
                    heads = math.gcd(temporal_heads, width)
                    temporal_j = BlockTemporal(width, heads, self.state, cond_dim)
                    blocks[j] = InflatedBlock(block, temporal_j)
            elif temporal_layers:
                channels = spatial.config.in_channels
                heads = math.gcd(temporal_heads, channels)
                temporal = TemporalAttention(channels, heads, self.state, cond_dim=cond_dim)
            slots[i] = InflatedTransformer(spatial, temporal)
        self.set_frame_attention(frame_attention)

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def set_frame_attention(self, mode: str) -> None:
        """Choose the frame-to-frame self-attention of every spatial block (FRAME_ATTENTION)."""
        key_frames(mode, 1)
        self.frame_attention = mode
        processors = {}
        for name in self.unet.attn_processors:
            spatial_self = ".spatial." in name and name.endswith("attn1.processor")
            processors[name] = (
                FrameAttnProcessor(mode, self.state) if spatial_self else AttnProcessor2_0()
            )
        self.unet.set_attn_processor(processors)

    def temporal_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if ".temporal." in n]

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
    ) -> torch.Tensor:
        b, c, f, h, w = sample.shape
        x = sample.transpose(1, 2).reshape(b * f, c, h, w)
        cond = encoder_hidden_states.repeat_interleave(f, dim=0)  # (b * f, tokens, dim)
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim == 1 and len(t) == b:
            t = t.repeat_interleave(f)
        self.state.frames = f
        self.state.condition = encoder_hidden_states if self.temporal_condition else None
        try:
            out = self.unet(x, t, encoder_hidden_states=cond).sample  # (b * f, c_out, h, w)
        finally:
            self.state.condition = None
        return out.view(b, f, -1, h, w).transpose(1, 2)


def load_pretrained(folder: Path, generator: GeneratorConfig) -> dict:
    """The video-pretrained UNet's state dict, after checking it was inflated as `generator`
    asks (cotrain and decode inflate the same way, then load it)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    saved = json.loads((folder / GENERATOR_FILE).read_text())["generator"]
    if GeneratorConfig.model_validate(saved) != generator:
        raise DataError(
            f"{folder}: the video-pretrained UNet was inflated as {saved}, this run asks for "
            f"{generator_record(generator)}; the planner pairs them, so this entry was "
            "moved or edited: remove it and run again"
        )
    return load_file(str(folder / UNET_WEIGHTS), device="cpu")


UNET_WEIGHTS = "unet.safetensors"  # the inflated UNet's state dict (unet.* and temporal layers)


GENERATOR_FILE = "generator.json"


def save_generator_file(folder: Path, generator: GeneratorConfig) -> None:
    """generator.json beside an inflated UNet's weights: how it was inflated."""
    text = json.dumps({"generator": generator_record(generator)}, indent=1) + "\n"
    (Path(folder) / GENERATOR_FILE).write_text(text)


def inflate(unet, cfg: GeneratorConfig, seed: int):
    """The inflated UNet, its new temporal layers initialised from `seed`."""
    import torch

    from mindvideo.models.inflated_unet import InflatedUNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return InflatedUNet(
            unet,
            cfg.frame_attention,
            cfg.temporal_layers,
            cfg.temporal_heads,
            cfg.temporal_layer,
            cfg.temporal_condition,
        )


def check_compatible(encoder, model, cfg) -> None:
    if encoder.adapter is not None and encoder.cond_shape[1] != model.cond_dim:
        raise ConfigError(
            f"the align stage mapped the condition onto {encoder.cond_shape[1]}-wide CLIP token "
            f"states but the diffusion UNet reads {model.cond_dim}-wide conditions: the "
            "foundation CLIP must be the generator's text encoder (SD 1.5: ViT-L/14), or set "
            "align.enabled: false"
        )
    if encoder.cond_shape[1] != model.cond_dim:
        raise ConfigError(
            f"the encoder's condition is {encoder.cond_shape[1]} wide but the diffusion UNet reads "
            f"{model.cond_dim}-wide conditions (SD 1.5: 768; SynthCC: eval.clip.text_width); "
            "make encoder.cond_dim equal, or enable the align stage (align.enabled)"
        )
    if encoder.window != cfg.window:
        raise DataError(
            f"the encoder reads windows of {encoder.window} frames, the config asks for "
            f"{cfg.window}; re-run the contrastive stage with this profile"
        )
