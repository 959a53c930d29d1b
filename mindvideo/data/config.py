"""Typed configuration of the data slice of a profile (`data:`): source, preprocessing, windows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mindvideo.data.paired import (
    CheckedValSegments,
    FramesPerClip,
    TrainFraction,
    Window,
    WindowOffset,
)
from mindvideo.data.prepare import PrepareConfig
from mindvideo.data.preprocess import PreprocessConfig
from mindvideo.data.synth.config import SimulateConfig

# The window offset where a profile leaves it unset: SynthCC's responses and CIFTI runs are
# recorded as acquired, so the window looks 2 TRs (4 s) ahead for the haemodynamic delay; the
# public MinD-Video code reads its preprocessed arrays with the window at the clip's own TR.
SOURCE_WINDOW_OFFSET = {"synth": 2, "cc2017": 2, "mindvideo_npy": 0}


class DataConfig(BaseModel):
    """Where the data comes from and how it becomes (fMRI window, clip) samples."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["synth", "cc2017", "mindvideo_npy"] = "synth"
    root: str | None = Field(
        None,
        description="dataset folder; for synth, where it is simulated "
        "(default <store>/data/<profile>)",
    )
    synth: SimulateConfig | None = None
    corpus_root: str | None = Field(
        None, description="HCP-style unpaired corpus for MBM (synth: <root>/hcp)"
    )
    corpus_mask: str | None = Field(None, description="ROI mask over cortical grayordinates")
    preprocess: PreprocessConfig = PreprocessConfig()
    # bounds: the pairing's (mindvideo/data/paired.py), 10-100x beyond any sane value
    window: Window = Field(2, description="fMRI frames per sample (paper: 2)")
    window_offset: WindowOffset = Field(
        2,
        description="first fMRI frame of the window, in TRs after the clip; unset (or null): "
        "the source's (SOURCE_WINDOW_OFFSET: 2 for SynthCC and CIFTI runs, the haemodynamic "
        "delay; 0 for MinD-Video's npy arrays, read as its public code reads them)",
    )
    window_edge: Literal["drop", "clamp"] = Field(
        "drop",
        description="a window that runs past its segment's end: dropped (drop), or its volumes "
        "clamped to the segment, repeating the last one (clamp: every TR yields a sample)",
    )
    frames_per_clip: FramesPerClip = Field(6, description="video frames sampled per 2 s clip")
    prepare: PrepareConfig | None = Field(
        None,
        description="real data: how `mvbench data prepare` converts the release's movies "
        "(frame size and rate, the scene-cut threshold); None: its defaults",
    )
    val_segments: CheckedValSegments = Field(
        (),
        description="real data: training segments held out as the validation split, by name "
        "([seg18]) or a count from the end of the training list (1); never trained on",
    )
    train_fraction: TrainFraction = Field(
        1.0,
        description="the share of the training segments a subject has, scans and pairs alike: "
        "the first round(f x n) (at least 1; nested, so 0.25's are among 0.5's); 1: all. For "
        "data-regime studies; the MBM corpus is not affected",
    )

    @model_validator(mode="before")
    @classmethod
    def _offset_by_source(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("window_offset") is None:
            source = data.get("source", "synth")
            if source in SOURCE_WINDOW_OFFSET:
                data = {**data, "window_offset": SOURCE_WINDOW_OFFSET[source]}
        return data

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.source == "synth" and self.synth is None:
            raise ValueError("source 'synth' needs a 'synth' section (the simulator config)")
        if self.source != "synth" and self.synth is not None:
            raise ValueError(f"source '{self.source}' reads files: remove the 'synth' section")
        if self.source == "synth" and self.val_segments:
            raise ValueError(
                "data.val_segments holds out training segments of real data; SynthCC "
                "simulates validation segments of its own: remove it and set "
                "data.synth.protocol.val_segments instead"
            )
        return self

    @property
    def has_val(self) -> bool:
        """Whether the data have a validation split."""
        if self.source == "synth":
            return bool(self.synth.protocol.val_segments)
        return bool(self.val_segments)

    @property
    def val_key(self) -> str:
        """The profile key that gives the data a validation split."""
        return "data.synth.protocol.val_segments" if self.source == "synth" else "data.val_segments"
