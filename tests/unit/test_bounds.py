"""Size bounds: a typo (10-1000x a sane value, or 0) fails when the profile loads, naming the
dotted key and the value; the paper's sizes, and sizes well beyond them, still load."""

from __future__ import annotations

import pytest
from conftest import write_spec

from harness.plan import build_plan
from harness.profiles import load_profile
from harness.spec import load_spec
from mindvideo.errors import ConfigError, typed_section
from mindvideo.models.clip_config import ClipConfig

# dotted key -> a typo of it; the bound it crosses
TYPOS = {
    "data.frames_per_clip": (3000, "less than or equal to 1000"),
    "data.window": (200, "less than or equal to 16"),
    "decode.steps": (500_000, "less than or equal to 10000"),
    "decode.frames": (6000, "less than or equal to 1000"),
    "decode.batch_size": (0, "greater than or equal to 1"),
    "diffusion.unet.batch_size": (0, "greater than or equal to 1"),
    "diffusion.vae.steps": (80_000_000, "less than or equal to 1000000"),
    "diffusion.vae.crop": (320_000, "less than or equal to 4096"),
    "diffusion.train_timesteps": (10_000_000, "less than or equal to 100000"),
    "mbm.model.embed_dim": (1_024_000, "less than or equal to 16384"),
    "mbm.model.depth": (2400, "less than or equal to 256"),
    "encoder.cond_tokens": (77_000, "less than or equal to 4096"),
    "generator.temporal_heads": (8000, "less than or equal to 256"),
    "data.preprocess.patch_size": (16_000, "less than or equal to 1024"),
}

# synthetic data only (the paper profile reads CC2017)
SYNTH_TYPOS = {
    "data.synth.protocol.train_trs": (900_000, "less than or equal to 20000"),
    "data.synth.protocol.test_repeats": (10_000, "less than or equal to 100"),
    "data.synth.corpus.subjects": (2_000_000, "less than or equal to 10000"),
    "data.synth.world.scene_max_s": (80_000, "less than or equal to 600"),
}


def typo_error(profile: str, key: str, value) -> str:
    with pytest.raises(ConfigError) as e:
        load_profile(profile, {key: value})
    return str(e.value)


@pytest.mark.parametrize("key", [*TYPOS, *SYNTH_TYPOS])
def test_a_typo_fails_naming_the_key_and_the_value(key):
    value, bound = {**TYPOS, **SYNTH_TYPOS}[key]
    msg = typo_error("tiny", key, value)
    assert f"tiny.yaml: invalid config\n  {key}: Input should be {bound}" in msg
    assert f"{key}={value}" in msg  # the override that gave it


@pytest.mark.parametrize("key", ["data.frames_per_clip", "decode.steps", "mbm.model.embed_dim"])
def test_the_paper_profile_refuses_typos_too(key):
    value, bound = TYPOS[key]
    msg = typo_error("paper", key, value)
    assert f"paper.yaml: invalid config\n  {key}: Input should be {bound}" in msg


def test_sizes_well_beyond_the_papers_still_load():
    # about 10x the paper's: bounds are for typos, not for ambitious runs
    big = {
        "decode.steps": 1000,
        "data.frames_per_clip": 60,
        "mbm.model.embed_dim": 8192,
        "mbm.model.depth": 96,
        "encoder.cond_tokens": 770,
        "encoder.cond_dim": 7680,
        "diffusion.vae.steps": 300_000,
    }
    profile = load_profile("paper", big)
    assert profile.decode.steps == 1000 and profile.mbm.model.embed_dim == 8192
    world = {"data.synth.protocol.train_trs": 2400, "data.synth.brain.subcortical_voxels": 31870}
    assert load_profile("tiny", world).data.synth.protocol.train_trs == 2400


def test_a_lazily_typed_section_names_the_key_and_the_value():
    # eval.clip is validated where a stage reads it (the synthetic CLIP's training)
    profile = load_profile("tiny", {"eval.clip": {"epochs": 240_000}})
    with pytest.raises(ConfigError) as e:
        typed_section(profile, "eval.clip", ClipConfig)
    assert "eval.clip.epochs: Input should be less than or equal to 10000 (got 240000)" in str(
        e.value
    )
    profile = load_profile("tiny", {"eval.clip": {"batch_size": 0}})
    with pytest.raises(ConfigError, match=r"eval.clip.batch_size: .* 2 \(got 0\)"):
        typed_section(profile, "eval.clip", ClipConfig)


def test_spec_errors_name_the_file_the_key_and_the_value(tmp_path):
    base = "profile: smoke\nseeds: [0]\nsubjects: [subject1]\n"
    spec = write_spec(tmp_path, base + "variants: {full: {}}\nreport: {samples: -4}\n")
    with pytest.raises(ConfigError) as e:
        load_spec(spec)
    assert f"{spec}: invalid spec\n  report.samples: Input should be greater" in str(e.value)
    assert str(e.value).endswith("(got -4)")
    spec = write_spec(tmp_path, base + "variants: {full: {}, long: {decode.steps: 50000}}\n")
    with pytest.raises(ConfigError) as e:
        build_plan(load_spec(spec))
    msg = str(e.value)
    assert msg.startswith(f"{spec}: variants.long") and "decode.steps: Input should be" in msg
    assert "decode.steps=50000" in msg
