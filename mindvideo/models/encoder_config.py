"""Sizes and switches of the fMRI MAE and the spatiotemporal encoder (no torch: cheap to import
for config validation)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Sizes are bounded 10-100x beyond any sane value (paper: 16 voxels per patch, width 1024, depth
# 24, 16 heads, decoder 512 x 8; SD 1.5's condition 77 x 768) so that a typo fails at
# validation; bounds only validate, so no cache key changes.


class MAEConfig(BaseModel):
    """Sizes of the fMRI MAE (defaults: tiny; `paper()` gives MinD-Video's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patch_size: int = Field(
        16, ge=1, le=1024, description="voxels per patch (Conv1d kernel and stride)"
    )
    embed_dim: int = Field(64, ge=8, le=16384)
    depth: int = Field(2, ge=1, le=256)
    num_heads: int = Field(4, ge=1, le=256)
    mlp_ratio: float = Field(1.0, gt=0, le=64)
    decoder_embed_dim: int = Field(32, ge=8, le=16384)
    decoder_depth: int = Field(1, ge=1, le=256)
    decoder_num_heads: int = Field(4, ge=1, le=256)
    mask_ratio: float = Field(0.75, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> MAEConfig:
        for width, heads, what in (
            (self.embed_dim, self.num_heads, "embed_dim / num_heads"),
            (
                self.decoder_embed_dim,
                self.decoder_num_heads,
                "decoder_embed_dim / decoder_num_heads",
            ),
        ):
            if width % heads:
                raise ValueError(f"{what}: {width} is not a multiple of {heads}")
        if self.embed_dim % 2 or self.decoder_embed_dim % 2:
            raise ValueError("embed_dim and decoder_embed_dim must be even (sin-cos positions)")
        return self

    @classmethod
    def paper(cls) -> MAEConfig:
        """MinD-Video's sizes: embed 1024, depth 24, heads 16, mlp_ratio 1, decoder 512 x 8."""
        return cls(
            embed_dim=1024,
            depth=24,
            num_heads=16,
            mlp_ratio=1.0,
            decoder_embed_dim=512,
            decoder_depth=8,
            decoder_num_heads=16,
        )


class EncoderConfig(BaseModel):
    """The encoder's switches and output shape (its transformer sizes are the MAE's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    init: Literal["mbm", "scratch"] = "mbm"
    temporal_attention: bool = True
    cond_tokens: int = Field(8, ge=1, le=4096, description="condition tokens (77 for SD 1.5)")
    cond_dim: int = Field(64, ge=1, le=16384, description="condition width (768 for SD 1.5)")
    checkpoint_activations: bool = Field(
        False,
        description="keep only each block's input in training and recompute the block in the "
        "backward pass: the activation memory of one block instead of all of them, for about a "
        "third more compute; changes no number (in no cache key). The paper profile's "
        "contrastive batch of 64 windows fits one GPU only with it (bench/encoder_memory.py)",
    )

    @classmethod
    def paper(cls) -> EncoderConfig:
        return cls(cond_tokens=77, cond_dim=768)
