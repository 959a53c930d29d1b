"""Sizes and training of the synthetic domain's text-to-image model: the stand-in for Stable
Diffusion (no torch here: cheap to import for config validation)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Sizes are bounded 10-100x beyond any sane value (SD 1.5: channels up to 1280, 1,000 training
# timesteps, 50-200 DDIM steps; the tiny UNet's 6,000 optimiser steps; 6-12 frames per 2 s
# clip) so that a typo fails at validation; bounds only validate, so no cache key changes.
Channels = Annotated[int, Field(ge=1, le=16384)]


class VAEConfig(BaseModel):
    """A small `AutoencoderKL` trained on the dataset's frames (L2 reconstruction + KL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    block_out_channels: tuple[Channels, ...] = Field(
        (16, 32, 32),
        min_length=1,
        max_length=8,
        description="one entry per level; the frame shrinks 2x per level but one",
    )
    layers_per_block: int = Field(1, ge=1, le=16)
    latent_channels: int = Field(4, ge=1, le=256)
    norm_num_groups: int = Field(8, ge=1, le=1024)
    steps: int = Field(800, ge=1, le=1_000_000, description="optimiser steps")
    batch_size: int = Field(16, ge=1, le=4096)
    crop: int | None = Field(
        32,
        ge=8,
        le=4096,
        description="train on random square crops of this side (None: whole frames)",
    )
    lr: float = Field(1e-3, gt=0)
    kl_weight: float = Field(1e-6, ge=0, description="SD's autoencoder uses ~1e-6")
    frame_stride: int = Field(2, ge=1, le=1000, description="train on every k-th frame")

    @model_validator(mode="after")
    def _groups(self) -> VAEConfig:
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} not multiples of norm_num_groups")
        return self

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


class UNetConfig(BaseModel):
    """A small `UNet2DConditionModel` trained text-to-image on the VAE's latents, conditioned on
    the synthetic CLIP's text token states (its cross-attention width is the text width)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    block_out_channels: tuple[Channels, ...] = Field((32, 64, 64), min_length=1, max_length=8)
    layers_per_block: int = Field(1, ge=1, le=16)
    attention_head_dim: int = Field(8, ge=1, le=1024)
    norm_num_groups: int = Field(16, ge=1, le=1024)
    cross_attention_levels: tuple[bool, ...] = Field(
        (True, True, False), description="which levels have spatial transformers"
    )
    steps: int = Field(3000, ge=1, le=1_000_000, description="optimiser steps")
    batch_size: int = Field(32, ge=1, le=4096)
    lr: float = Field(5e-4, gt=0)
    cond_dropout: float = Field(
        0.1, ge=0, lt=1, description="share of steps with the zero condition (for guidance)"
    )
    frame_stride: int = Field(2, ge=1, le=1000)

    @model_validator(mode="after")
    def _levels(self) -> UNetConfig:
        if len(self.cross_attention_levels) != len(self.block_out_channels):
            raise ValueError("cross_attention_levels needs one entry per block_out_channels")
        if not any(self.cross_attention_levels):
            raise ValueError("at least one level needs cross-attention (the condition)")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} not multiples of norm_num_groups")
        return self


class DiffusionConfig(BaseModel):
    """The generator's image model: trained on SynthCC, or an SD 1.5 folder by path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vae: VAEConfig = VAEConfig()
    unet: UNetConfig = UNetConfig()
    train_timesteps: int = Field(1000, ge=10, le=100_000)
    beta_start: float = Field(0.00085, gt=0)
    beta_end: float = Field(0.012, gt=0)
    beta_schedule: str = "scaled_linear"  # SD 1.5's
    samples: int = Field(8, ge=0, le=1000, description="test captions drawn in the samples figure")
    sample_steps: int = Field(25, ge=1, le=10_000, description="DDIM steps of the samples figure")
    guidance_scale: float = Field(3.0, ge=1, description="of the samples figure")
    seed: int = 0


class GeneratorConfig(BaseModel):
    """How the image UNet is inflated to video (mindvideo/models/inflated_unet.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frame_attention: Literal["prev2", "first_prev", "full", "none"] = Field(
        "prev2",
        description="frame i's self-attention reads frames i-2, i-1 (prev2, MinD-Video), the "
        "first and previous (first_prev), all (full), or itself only (none: per-frame images)",
    )
    temporal_layers: bool = Field(
        True, description="a zero-initialised temporal attention per block"
    )
    temporal_heads: int = Field(8, ge=1, le=256)
    temporal_layer: Literal["post_transformer", "in_block"] = Field(
        "post_transformer",
        description="where the temporal attention sits: after each whole spatial transformer "
        "(post_transformer: GroupNorm, frame positions, all-zero output at init) or inside "
        "each transformer block after its feed-forward (in_block: MinD-Video's public UNet; "
        "LayerNorm, no positions, only the output weight zero at init)",
    )
    temporal_condition: bool = Field(
        False,
        description="true: each temporal layer also attends to the condition tokens (a "
        "cross-attention after its attention over the frames, zero at init), so the caption or "
        "the fMRI can steer how the frames change; false: only the spatial cross-attention reads "
        "the condition (MinD-Video). Needs temporal_layers",
    )

    @model_validator(mode="after")
    def _condition_needs_layers(self) -> GeneratorConfig:
        if self.temporal_condition and not self.temporal_layers:
            raise ValueError(
                "temporal_condition: true needs temporal layers to attend from; set "
                "generator.temporal_layers: true or generator.temporal_condition: false"
            )
        return self


# Generator fields added after entries were cached, at the value those entries had: left out of
# the keys of the stages that read `generator` (GENERATOR_KEY_NEUTRAL) and of generator.json, so
# earlier entries stay valid.
GENERATOR_NEUTRAL = {"temporal_layer": "post_transformer", "temporal_condition": False}
GENERATOR_KEY_NEUTRAL = {("generator", k): v for k, v in GENERATOR_NEUTRAL.items()}


def generator_record(generator: GeneratorConfig) -> dict:
    """How `generator` is recorded: its fields, less those at their GENERATOR_NEUTRAL value."""
    record = generator.model_dump(mode="json")
    return {k: v for k, v in record.items() if GENERATOR_NEUTRAL.get(k, object()) != v}


class GuidanceConfig(BaseModel):
    """Adversarial guidance: eps = eps(neg) + scale * (eps(cond) - eps(neg))."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float = Field(12.5, ge=1.0, description="1: no guidance (the condition alone)")
    negative: Literal["test_mean", "train_mean", "zeros"] = Field(
        "test_mean",
        description="the negative condition: the encoder's embedding of the mean fMRI of the "
        "split decoded (test_mean: the test fMRI as MinD-Video, the validation fMRI under "
        "eval.split: val), of the mean training fMRI (no held-out statistics), or zeros: the "
        "unconditional branch of co-training (cotrain.uncond; plain classifier-free guidance)",
    )


class DecodeOptions(BaseModel):
    """Sampling: scheduler, steps, frames per clip (any frame rate over the 2 s clip)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheduler: str = Field("DDIMScheduler", description="any diffusers scheduler class name")
    steps: int = Field(50, ge=1, le=10_000)
    eta: float = Field(0.0, ge=0)
    frames: int | None = Field(None, ge=1, le=1000, description="None: data.frames_per_clip")
    batch_size: int = Field(8, ge=1, le=4096, description="clips per pipeline call")
    samples: int = Field(4, ge=0, le=1000, description="GIFs written")
    shuffle_fmri: bool = Field(
        False,
        description="control: decode each test clip from another clip's fMRI (a permutation "
        "drawn from the run seed), so scores measure what the generator gets right without it",
    )
    condition: Literal["fmri", "caption"] = Field(
        "fmri",
        description="caption: decode from the test captions' CLIP token states instead of the "
        "fMRI (the generator's ceiling: what it draws when the condition is exact)",
    )
    noise_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="the share of each clip's initial noise common to all its frames (variance "
        "kept): 0 = independent noise per frame (MinD-Video), 1 = the same noise for every frame",
    )
