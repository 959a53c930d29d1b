import numpy as np
import pytest

from mindvideo.data.inspect import inspect_dataset, noise_ceiling


def test_noise_ceiling_matches_the_spearman_brown_formula():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((4000, 30))
    runs = signal[None] + rng.standard_normal((10, 4000, 30))  # one-repeat reliability 0.5
    expect = np.sqrt(10 * 0.5 / (1 + 9 * 0.5))  # reliability of the 10-repeat mean
    assert noise_ceiling({"test1": runs}) == pytest.approx(expect, abs=0.01)
    pure_noise = rng.standard_normal((10, 4000, 30))
    assert noise_ceiling({"test1": pure_noise}) < 0.15
    assert noise_ceiling({"test1": runs[:1]}) is None


def test_smoke_dataset_validates(smoke_dataset, smoke_profile):
    d = smoke_profile.data
    report = inspect_dataset(smoke_dataset, d.preprocess, d.window, d.window_offset)
    assert report["dataset"] == "SynthCC" and report["tr"] == 2.0
    assert report["valid"], report["checks"]
    for entry in report["subjects"].values():
        assert entry["train"]["samples"] == 6 * (30 - 3)
        assert set(entry) >= {
            "roi_recall",
            "roi_false_positive_rate",
            "noise_ceiling",
            "lag_peak_tr",
            "true_lag_tr",
            "lag_accuracy",
        }
        curve = entry["lag_accuracy"]
        assert curve[str(entry["lag_peak_tr"])] > curve["0"] + 0.1
        # the encoding estimate needs no annotations (it runs on real data) and finds the lag
        # the simulation used: within a TR, and checked as such
        encoding = entry["encoding_lag_r"]
        assert abs(entry["encoding_lag_peak_tr"] - entry["true_lag_tr"]) <= 1
        assert encoding[str(entry["encoding_lag_peak_tr"])] > encoding["0"] + 0.1
    names = {c["name"] for c in report["checks"]}
    assert {"lag_peak_tr", "encoding_lag_peak_tr"} <= names
    # a v1 world: its motion is reported (slow: v1's objects move < 1 latent pixel per scored
    # frame), not checked against v2's rule
    motion = report["motion"]
    assert motion["motion"] == "capped" and motion["share_at_least_one_latent_px"] < 0.5
    assert motion["share_speed_in_range"] == 1.0
    assert not [c for c in report["checks"] if c["subject"] == "stimuli"]


def test_summary_only(smoke_dataset):
    report = inspect_dataset(smoke_dataset, validate=False)
    assert "checks" not in report
    assert "roi_recall" not in report["subjects"]["subject1"]
    assert report["subjects"]["subject1"]["test"]["repeats"] == [10]


def _stimuli(folder, cfg, seconds=300.0, seed=0):
    from types import SimpleNamespace

    from mindvideo.data.synth import world

    scenes = world.make_scenes(np.random.default_rng(seed), seconds, cfg)
    world.frame_table(scenes, int(seconds * cfg.fps), cfg).to_csv(folder / "seg1_frames.csv")
    return SimpleNamespace(folder=folder, fps=cfg.fps, frames_per_tr=int(2 * cfg.fps))


@pytest.mark.parametrize(
    ("world", "passed"),
    [
        ({}, True),  # SynthCC v2's world
        ({"speed_range": (0.05, 0.1)}, False),  # wrapping, but slower than one latent pixel
    ],
)
def test_motion_statistics_check_v2s_rule(tmp_path, world, passed):
    from mindvideo.data.inspect import _motion_checks, motion_statistics
    from mindvideo.data.synth.config import SimulateConfig

    cfg = SimulateConfig.model_validate({"version": 2, "world": world}).world
    stats = motion_statistics(_stimuli(tmp_path, cfg), cfg.model_dump(), frames_per_clip=6)
    assert stats["motion"] == "wrap" and stats["latent_px"] == 4.0
    assert stats["scored_frames_per_s"] == 3.0
    lo, hi = cfg.speed_range
    assert lo * 64 / 3 - 1e-6 <= stats["px_per_scored_frame"]["p5"]
    assert stats["px_per_scored_frame"]["p95"] <= hi * 64 / 3 + 1e-6
    checks = {c["name"]: c["passed"] for c in _motion_checks(stats)}
    assert checks == {"share_speed_in_range": True, "share_at_least_one_latent_px": passed}
