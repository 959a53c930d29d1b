"""The video_pretrain stage's pieces: fresh clips of the stimulus world, the held-out direction
gap, the pretrained UNet's pairing with the run's inflation, and the planner's switch (off by
default: no stage, no changed key)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import toy_image_unet

from harness.plan import pipeline, stage_config
from harness.profiles import load_profile
from mindvideo.data.synth.config import WorldConfig
from mindvideo.data.synth.world import DIRECTIONS, sample_clips
from mindvideo.errors import ConfigError, DataError
from mindvideo.models.diffusion import build_scheduler
from mindvideo.models.diffusion_config import DiffusionConfig, GeneratorConfig
from mindvideo.models.inflated_unet import GENERATOR_FILE, UNET_WEIGHTS, inflate, load_pretrained
from mindvideo.stages import video_pretrain as vp

WORLD = WorldConfig(height=24, width=24, fps=6)


def clips(seed: int, n: int, frames: int = 6):
    parts = list(sample_clips(np.random.default_rng(seed), n, 2.0, frames, WORLD))
    return np.concatenate([f for f, _ in parts]), [c for _, cs in parts for c in cs]


def test_fresh_clips_come_in_segments_seeded_and_spaced_as_the_stimuli():
    frames, captions = clips(0, 13)
    assert frames.shape == (13, 6, 24, 24, 3) and frames.dtype == np.uint8
    assert len(captions) == 13 and all(any(d in c for d in DIRECTIONS) for c in captions)
    again, same = clips(0, 13)
    assert np.array_equal(frames, again) and captions == same
    assert not np.array_equal(frames, clips(1, 13)[0])
    # 12 frames per 2 s TR at 6 fps: 6 frames take every other one, 12 all of them, so the
    # 6-frame clip is the 12-frame clip's even frames
    every = clips(0, 13, frames=12)[0]
    assert np.array_equal(every[:, ::2], frames)
    assert (np.abs(np.diff(frames.astype(int), axis=1)).mean(axis=(2, 3, 4)) > 0).mean() > 0.9


def test_a_clip_count_the_tr_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="frames per clip"):
        clips(0, 2, frames=13)
    with pytest.raises(ValueError, match="whole number of frames"):
        next(sample_clips(np.random.default_rng(0), 1, 1.25, 6, WORLD))


def test_the_direction_gap_is_zero_for_clips_that_read_the_same_backwards():
    unet = inflate(toy_image_unet(12), GeneratorConfig(temporal_heads=2), 0)
    scheduler = build_scheduler(DiffusionConfig())
    g = torch.Generator().manual_seed(0)
    still = torch.randn(4, 4, 1, 4, 4, generator=g).expand(4, 4, 3, 4, 4).contiguous()
    tokens = torch.randn(2, 3, 12, generator=g)
    index = np.array([0, 1, 0, 1])
    out = vp.direction_losses(unet, scheduler, (still, tokens, index), 1, "cpu", 0.0)
    assert out["direction_gap"] == 0.0 and out["val_loss"] > 0
    moving = torch.randn(4, 4, 3, 4, 4, generator=g)
    out = vp.direction_losses(unet, scheduler, (moving, tokens, index), 1, "cpu", 0.0)
    assert out["direction_gap"] == pytest.approx(out["val_loss_backwards"] - out["val_loss"])
    assert out["direction_gap"] != 0.0
    assert out["val_loss_zero_cond"] != out["val_loss"]


def test_the_pretrained_unet_must_match_the_runs_inflation(tmp_path):
    from safetensors.torch import save_file

    generator = GeneratorConfig(temporal_heads=2)
    unet = inflate(toy_image_unet(12), generator, 0)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, tmp_path / UNET_WEIGHTS)
    (tmp_path / GENERATOR_FILE).write_text('{"generator": ' + generator.model_dump_json() + "}")
    state = load_pretrained(tmp_path, generator)
    fresh = inflate(toy_image_unet(12, seed=1), generator, 1)
    fresh.load_state_dict(state)
    assert all(torch.equal(v, state[k]) for k, v in fresh.state_dict().items())
    with pytest.raises(DataError, match="inflated as"):
        load_pretrained(tmp_path, GeneratorConfig(temporal_heads=2, frame_attention="none"))


def test_off_by_default_and_on_only_for_synthcc():
    profile = load_profile("smoke")
    assert "video_pretrain" not in [name for name, _ in pipeline(profile)]
    on = load_profile("smoke", {"video_pretrain.enabled": True})
    stages = dict(pipeline(on))
    assert stages["video_pretrain"] == {"foundation": "foundation", "diffusion": "diffusion"}
    assert stages["cotrain"]["video_pretrain"] == "video_pretrain"
    assert stages["decode"]["video_pretrain"] == "video_pretrain"
    cfg = stage_config("video_pretrain", on, "subject1")
    assert cfg.world == on.data.synth.world and cfg.generator == on.generator
    assert cfg.frames_per_clip == on.data.frames_per_clip and cfg.clips == 24
    real = load_profile("paper", {"video_pretrain.enabled": True})
    with pytest.raises(ConfigError, match="video_pretrain.enabled: false"):
        stage_config("video_pretrain", real, "subject1")


def test_the_frame_change_loss_weighs_errors_that_differ_between_frames():
    from mindvideo.train.video_diffusion import noise_loss

    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, 5, 3, 3, generator=g)
    shared = torch.randn(2, 4, 1, 3, 3, generator=g).expand_as(noise)  # the same in every frame
    plain = torch.nn.functional.mse_loss(noise + shared, noise)
    assert torch.equal(noise_loss(noise + shared, noise), plain)  # no term at 0
    assert noise_loss(noise + shared, noise, 2.0) == pytest.approx(plain.item())
    # the same error size, but drawn anew per frame: the term adds its frame differences
    flicker = torch.randn(2, 4, 5, 3, 3, generator=g)
    base = noise_loss(noise + flicker, noise)
    change = (flicker[:, :, 1:] - flicker[:, :, :-1]).pow(2).mean()
    assert noise_loss(noise + flicker, noise, 2.0) == pytest.approx((base + 2.0 * change).item())
    # one frame: nothing to difference
    one = noise[:, :, :1]
    assert torch.equal(
        noise_loss(one + flicker[:, :, :1], one, 5.0), noise_loss(one + flicker[:, :, :1], one)
    )


def test_the_frame_change_loss_is_in_the_pretraining_key_only_when_used():
    from harness.cache import key_config
    from mindvideo.stages.registry import get_stage

    neutral = get_stage("video_pretrain").key_neutral
    on = load_profile("smoke", {"video_pretrain.enabled": True})
    plain = key_config(stage_config("video_pretrain", on, "subject1"), neutral)
    assert "frame_change_loss" not in plain
    weighted = load_profile(
        "smoke", {"video_pretrain.enabled": True, "video_pretrain.frame_change_loss": 1.0}
    )
    assert (
        key_config(stage_config("video_pretrain", weighted, "subject1"), neutral)[
            "frame_change_loss"
        ]
        == 1.0
    )
    with pytest.raises(ConfigError, match="frame_change_loss"):
        load_profile("smoke", {"video_pretrain.frame_change_loss": -1.0})
