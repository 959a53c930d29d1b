"""Typed configuration of the SynthCC simulator (the `data.synth` slice of a profile)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Sizes, counts and durations are bounded 10-100x beyond any sane value (CC2017: 18 training
# segments of 240 TRs, 10 test viewings, TR 2 s; HCP runs: 1,200 TRs; 31,870 subcortical
# voxels), so that a typo fails at validation; bounds only validate, so no cache key changes.


class WorldConfig(_Strict):
    """The stimulus world: scenes of one moving object over a background."""

    height: int = Field(64, ge=16, le=1024, description="rendered frame height, pixels")
    width: int = Field(64, ge=16, le=1024, description="rendered frame width, pixels")
    fps: int = Field(6, ge=1, le=60, description="render rate; the pipeline samples frames from it")
    scene_min_s: float = Field(2.0, gt=0, le=600, description="shortest scene, seconds")
    scene_max_s: float = Field(8.0, gt=0, le=600, description="longest scene, seconds")
    size_range: tuple[float, float] = Field(
        (0.18, 0.34), description="object radius as a fraction of the frame's shorter side"
    )
    speed_range: tuple[float, float] = Field(
        (0.04, 0.14), description="object speed, frame widths per second (v2: see V2_WORLD)"
    )
    motion: Literal["capped", "wrap"] = Field(
        "capped",
        description="capped (v1): a scene travels at most 60% of the frame, so long scenes move "
        "slower than drawn; wrap (v2): the object keeps its speed and direction for the whole "
        "scene, leaving the frame on one side and coming back on the other",
    )

    @field_validator("size_range", "speed_range")
    @classmethod
    def _low_high(cls, value: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        lo, hi = value
        if not 0 < lo <= hi:
            raise ValueError(f"must be [low, high] with 0 < low <= high, got {[lo, hi]}")
        # a radius of the whole frame; 70x the default speed
        most = {"size_range": 1.0, "speed_range": 10.0}[info.field_name]
        if hi > most:
            raise ValueError(f"high must be <= {most}, got {[lo, hi]}")
        return value

    @model_validator(mode="after")
    def _check(self) -> WorldConfig:
        if self.scene_max_s < self.scene_min_s:
            raise ValueError(
                f"scene_max_s ({self.scene_max_s}) must be >= scene_min_s ({self.scene_min_s})"
            )
        return self


Region = Literal["early_visual", "colour_shape", "motion", "category", "non_visual"]


class BrainConfig(_Strict):
    """The simulated subjects' cortex, haemodynamics and noise."""

    sheet_side: int = Field(
        32,
        ge=4,
        le=256,
        description="each hemisphere is a sheet_side x sheet_side grid of "
        "vertices; must be a power of two (Hilbert ordering)",
    )
    subcortical_voxels: int = Field(
        32,
        ge=0,
        le=1_000_000,
        description="volume voxels after the cortex in each CIFTI file (no drive)",
    )
    boundary_jitter: float = Field(
        0.03, ge=0, le=0.2, description="per-subject warp of region borders, fraction of sheet"
    )
    snr: dict[Region, float] = Field(
        default_factory=lambda: {
            "early_visual": 1.2,
            "colour_shape": 1.0,
            "motion": 1.0,
            "category": 1.0,
            "non_visual": 0.0,
        },
        description="signal std / noise std per region (amplitude ratio)",
    )
    snr_jitter: float = Field(0.15, ge=0, le=1, description="log-normal spread of voxel SNR")
    hrf_peak_s: float = Field(5.0, gt=1, lt=12, description="mean HRF peak time, seconds")
    hrf_peak_jitter_s: float = Field(0.5, ge=0, le=3, description="std of per-voxel HRF peak")
    ar1: float = Field(0.4, ge=0, lt=1, description="AR(1) coefficient of the noise per TR")
    noise_smoothness: float = Field(
        1.5,
        ge=0,
        le=256,
        description="spatial noise correlation, Gaussian sigma in sheet vertices",
    )
    smooth_noise_fraction: float = Field(
        0.6, ge=0, le=1, description="share of noise variance that is spatially smooth"
    )
    drift_std: float = Field(0.6, ge=0, description="slow drift amplitude, in noise stds")

    @field_validator("sheet_side")
    @classmethod
    def _power_of_two(cls, side: int) -> int:
        if side & (side - 1):
            raise ValueError(f"must be a power of two (4, 8, 16, 32, ...), got {side}")
        return side

    @field_validator("snr")
    @classmethod
    def _all_regions(cls, snr: dict[str, float]) -> dict[str, float]:
        missing = {"early_visual", "colour_shape", "motion", "category"} - set(snr)
        if missing:
            raise ValueError(f"missing regions {sorted(missing)}")
        if any(v < 0 for v in snr.values()):
            raise ValueError("values must be >= 0")
        return snr


class ProtocolConfig(_Strict):
    """The scanning protocol: segments, repeats and TR, as in CC2017."""

    subjects: int = Field(3, ge=1, le=64)
    tr: float = Field(2.0, gt=0, le=60, description="repetition time, seconds (one clip per TR)")
    train_segments: int = Field(12, ge=1, le=1000)
    train_trs: int = Field(90, ge=8, le=20_000, description="volumes per training segment")
    train_repeats: int = Field(2, ge=1, le=100)
    test_segments: int = Field(4, ge=1, le=1000)
    test_trs: int = Field(60, ge=8, le=20_000, description="volumes per test segment")
    test_repeats: int = Field(10, ge=1, le=100)
    val_segments: int = Field(
        0,
        ge=0,
        le=1000,
        description="validation segments val1..valN, seen like test segments (repeated, "
        "averaged), never trained on: what tuning scores (eval.split: val); 0: none",
    )
    val_trs: int | None = Field(
        None, ge=8, le=20_000, description="volumes per validation segment (test_trs)"
    )
    val_repeats: int | None = Field(
        None, ge=1, le=100, description="viewings per validation segment"
    )

    @property
    def val_shape(self) -> tuple[int, int]:
        """(volumes, repeats) of each validation segment: the test values unless given."""
        return (self.val_trs or self.test_trs, self.val_repeats or self.test_repeats)


# The validation options of `protocol`, added after datasets were simulated: at these values a
# dataset (and its cache key) is what it was before they existed.
VAL_NEUTRAL = {"val_segments": 0, "val_trs": None, "val_repeats": None}


class CorpusConfig(_Strict):
    """The unpaired pretraining corpus (the HCP stand-in): many subjects, random stimuli."""

    subjects: int = Field(20, ge=0, le=10_000)
    runs: int = Field(1, ge=1, le=100, description="runs per corpus subject")
    trs: int = Field(240, ge=8, le=20_000, description="volumes per run")


# SynthCC v2's world (issue 28), fixed from the generator's resolution before any v2 fMRI result:
# the stand-in decodes 64 px frames through a factor-4 autoencoder (16 x 16 latents), and a clip
# is scored on 6 frames over a 2 s TR (3 scored frames a second). Motion must move the object by
# at least one latent pixel (4 px) per scored frame: speed >= 4 px x 3 / 64 px = 0.1875 frame
# widths a second, rounded up to 0.2. It must stay below the smallest object's radius per scored
# frame (0.18 x 64 = 11.5 px), so that consecutive scored frames overlap and direction is not
# aliased: speed <= 11.5 x 3 / 64 = 0.54, rounded down to 0.5. Hence 0.2-0.5 frame widths a
# second (4.3-10.7 px, 1.1-2.7 latent pixels per scored frame; 2.1-5.3 px per rendered frame at
# 6 fps), uniform; "slowly" / "quickly" in captions split at 0.35. Objects wrap around the frame
# instead of stopping at v1's travel cap, so a scene keeps its direction label and its speed.
V2_WORLD = {"speed_range": (0.2, 0.5), "motion": "wrap"}

# Options added after v1 datasets were simulated: at these values a dataset (and its cache key)
# is what it was before they existed.
VERSION_NEUTRAL = {("version",): 1, ("world", "motion"): "capped"}


class SimulateConfig(_Strict):
    """Everything `mvbench data simulate` needs; the seed fixes every byte written."""

    version: Literal[1, 2] = Field(
        1,
        description="SynthCC version: 2 takes V2_WORLD's motion (faster, wrapping objects) for "
        "the world fields the profile does not give; 1 keeps v1's (the committed v1 tables)",
    )
    seed: int = 0
    world: WorldConfig = WorldConfig()
    brain: BrainConfig = BrainConfig()
    protocol: ProtocolConfig = ProtocolConfig()
    corpus: CorpusConfig = CorpusConfig()

    @model_validator(mode="before")
    @classmethod
    def _version_defaults(cls, data: Any) -> Any:
        """With version 2, V2_WORLD's values for the world fields not given."""
        if not isinstance(data, dict) or data.get("version") != 2:
            return data
        world = data.get("world")
        if isinstance(world, WorldConfig):
            world = world.model_dump(exclude_unset=True)
        world = dict(world or {})
        return {**data, "world": {**V2_WORLD, **world}}
