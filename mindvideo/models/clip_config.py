"""The synthetic-domain CLIP's architecture and training (a light module: no torch)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mindvideo.errors import ConfigError, typed_section

# Sizes are bounded 10-100x beyond any sane value (open_clip ViT-L/14: width 1024, 24 blocks,
# 16 heads, 77 tokens, 224 px; the tiny SynthCC CLIP: 24 epochs of 64 frames) so that a typo
# fails at validation; bounds only validate, so no cache key changes.
Depth = Annotated[int, Field(ge=1, le=256)]


class ClipConfig(BaseModel):
    """The synthetic-domain CLIP: architecture and training (defaults: the tiny SynthCC)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    embed_dim: int = Field(64, ge=8, le=16384, description="shared image-text embedding size")
    vision_layers: Depth | tuple[Depth, Depth, Depth, Depth] = Field(
        (1, 1, 1, 1),
        description="as open_clip: 4 stage depths -> ModifiedResNet, one int -> ViT blocks",
    )
    vision_width: int = Field(
        16, ge=4, le=16384, description="ResNet stem width (pool width is 32x) or ViT token width"
    )
    vision_heads: int = Field(
        8, ge=1, le=256, description="heads of the ResNet attention pool or ViT"
    )
    patch_size: int = Field(8, ge=1, le=1024, description="ViT patch side, pixels (ViT only)")
    vision_pool: Literal["tok", "avg"] = Field(
        "tok", description="ViT only: class token ('tok') or mean of patch tokens ('avg')"
    )
    # 32 px halves the tiny frames: steps are 2x cheaper, and the number of steps matters more
    # than resolution for learning shapes within the CPU budget.
    image_size: int | None = Field(
        32,
        ge=8,
        le=4096,
        description="model input side, pixels (frames are resized); None: the dataset's frames",
    )
    text_width: int = Field(64, ge=8, le=16384, description="text transformer width")
    text_layers: int = Field(2, ge=1, le=256, description="text transformer blocks")
    text_heads: int = Field(4, ge=1, le=256, description="text attention heads")
    context_length: int = Field(
        24, ge=8, le=4096, description="tokens per caption (SimpleTokenizer)"
    )
    epochs: int = Field(24, ge=1, le=10_000, description="passes over the sampled training frames")
    batch_size: int = Field(64, ge=2, le=8192, description="frames per contrastive batch")
    lr: float = Field(2e-3, gt=0, description="AdamW peak learning rate")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay on matrices")
    warmup: float = Field(0.05, ge=0, lt=1, description="fraction of steps of linear warm-up")
    frame_stride: int = Field(
        3, ge=1, le=1000, description="train on every k-th frame of each segment"
    )
    sub_caption_words: tuple[int, int] | None = Field(
        (1, 4),
        description="besides each caption, train on a random sub-caption of k of its words, "
        "k uniform in [low, high], order kept; None: full captions only",
    )
    seed: int = Field(0, description="seed of initialisation, batch order and sub-captions")

    @property
    def resnet(self) -> bool:
        return not isinstance(self.vision_layers, int)

    @model_validator(mode="after")
    def _check(self) -> ClipConfig:
        vision_width = self.vision_width * 32 if self.resnet else self.vision_width
        for tower, width, heads in (
            ("vision", vision_width, self.vision_heads),
            ("text", self.text_width, self.text_heads),
        ):
            if width % heads:
                raise ValueError(
                    f"{tower} width {width} is not a multiple of {tower}_heads {heads}"
                )
        if self.sub_caption_words is not None:
            low, high = self.sub_caption_words
            if not 1 <= low <= high:
                raise ValueError(
                    f"sub_caption_words must be [low, high], 1 <= low <= high; got {[low, high]}"
                )
        if self.image_size is not None and (problem := self.image_size_problem(self.image_size)):
            raise ValueError(problem)
        return self

    def image_size_problem(self, size: int) -> str | None:
        """Why `size` cannot be this model's input side, or None if it can."""
        step = 32 if self.resnet else self.patch_size
        if size % step == 0:
            return None
        what = "the ResNet's total stride 32" if self.resnet else f"patch_size {step}"
        return (
            f"clip image size {size} is not a multiple of {what}; set clip.image_size to a "
            f"multiple of {step}"
        )


def work_units(cfg: ClipConfig) -> int:
    """How many progress units `train_domain_clip` reports (one per epoch, one for evaluation)."""
    return cfg.epochs + 1


def check_condition_width(profile) -> None:
    """On SynthCC the UNet reads the synthetic CLIP's text tokens: a run's encoder condition
    must be as wide (real SD 1.5 is checked when its weights load)."""
    if profile.data.source != "synth" or profile.align.enabled:
        return  # real data: checked when SD loads; align: the adapter outputs the CLIP's shape
    width = typed_section(profile, "eval.clip", ClipConfig).text_width
    if profile.encoder.cond_dim != width:
        raise ConfigError(
            f"{profile.source}: encoder.cond_dim {profile.encoder.cond_dim} but the SynthCC UNet "
            f"reads conditions of the CLIP's text width, eval.clip.text_width {width}; make "
            "them equal"
        )
