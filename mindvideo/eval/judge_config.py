"""The SynthCC judges' sizes and training (a light module: no torch, no transformers)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _JudgeTraining(_Strict):
    input_size: int | None = Field(
        32, ge=8, description="square side the judge sees (frames are resized); None: as rendered"
    )
    extra_scenes: int = Field(
        2000,
        ge=0,
        description="freshly rendered scenes of the same world (seeded, never the "
        "benchmark's own) added to the training examples; the judge is an instrument, like an "
        "ImageNet classifier, and the test segments stay held out",
    )
    resnet_widths: tuple[int, ...] = Field(
        (32, 64, 128), description="ResNet stage widths (architecture resnet)"
    )
    resnet_depths: tuple[int, ...] = Field((1, 1, 1), description="ResNet blocks per stage")
    hidden_size: int = Field(96, ge=8, description="transformer width")
    layers: int = Field(3, ge=1, description="transformer blocks")
    heads: int = Field(4, ge=1, description="attention heads; must divide hidden_size")
    mlp_ratio: int = Field(4, ge=1, description="MLP width / hidden_size")
    patch_size: int = Field(8, ge=1, description="square patch side, pixels")
    epochs: int = Field(8, ge=1, description="passes over the training examples")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0, description="AdamW peak learning rate (warmup, cosine decay)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay on matrices")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="share of steps warming up")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    dihedral: bool = Field(
        True, description="random flips and transposes (a clip's motion label follows them)"
    )
    shift: int = Field(4, ge=0, description="random circular shifts up to this many pixels")

    @model_validator(mode="after")
    def _heads_divide(self):
        if len(self.resnet_widths) != len(self.resnet_depths):
            raise ValueError("resnet_widths and resnet_depths need one entry per stage")
        if self.hidden_size % self.heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of heads ({self.heads})"
            )
        return self


class FrameJudgeConfig(_JudgeTraining):
    """The frame judge over frame classes (shape x colour): a ResNet or a ViT."""

    architecture: Literal["resnet", "vit"] = "resnet"
    epochs: int = Field(6, ge=1, description="passes over the training frames")
    dihedral: bool = Field(
        False, description="random flips and transposes (SynthCC objects are always upright)"
    )
    frame_stride: int = Field(
        3, ge=1, description="train on every frame_stride-th frame (neighbours are near copies)"
    )


class VideoJudgeConfig(_JudgeTraining):
    """The video judge over video classes (shape x motion): a frame-stacking ResNet or a
    VideoMAE."""

    architecture: Literal["resnet", "videomae"] = "resnet"
    epochs: int = Field(12, ge=1, description="passes over the training clips")
    batch_size: int = Field(32, ge=1)
    num_frames: int = Field(6, ge=1, description="frames per clip the model sees (6 = 3 fps, 2 s)")
    tubelet_size: int = Field(2, ge=1, description="frames per space-time patch")
    clip_step: int | None = Field(
        None,
        ge=1,
        description="training clips start every clip_step rendered frames inside a scene; "
        "None = one clip per TR (the annotated clips)",
    )

    @model_validator(mode="after")
    def _tubelets(self):
        if self.num_frames % self.tubelet_size:
            raise ValueError(
                f"num_frames ({self.num_frames}) must be a multiple of tubelet_size "
                f"({self.tubelet_size})"
            )
        return self


class JudgeConfig(_Strict):
    """Sizes and training of both SynthCC judges."""

    frame: FrameJudgeConfig = FrameJudgeConfig()
    video: VideoJudgeConfig = VideoJudgeConfig()
    seed: int = Field(0, ge=0, description="model init, data order and augmentation")


def work_units(cfg: JudgeConfig) -> int:
    """How many progress units `train_synth_judges` reports (one per epoch and evaluation)."""
    return cfg.frame.epochs + cfg.video.epochs + 2
