"""Protocols with stand-in judges: the scoring logic, normalisation and scene-cut exclusion."""

import numpy as np
import pytest

from mindvideo.errors import ConfigError, DataError
from mindvideo.eval.protocols import (
    PROTOCOLS,
    Scorers,
    get_protocol,
    normalise,
    resample_frames,
    score,
)

CENTRES = np.stack(np.meshgrid(*[np.arange(32, 256, 64)] * 3, indexing="ij"), -1).reshape(-1, 3)


class ColourJudge:
    """Classifies a frame (or a clip, by its mean) by its mean colour: 64 colour classes."""

    def probs(self, x):
        x = np.asarray(x, dtype=np.float64)
        mean = x.reshape(x.shape[0], -1, 3).mean(1)  # (n, 3)
        logits = -((mean[:, None] - CENTRES[None]) ** 2).sum(-1) / 500.0
        p = np.exp(logits - logits.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)


class MeanColourClip:
    def image_embeddings(self, frames):
        e = frames.reshape(len(frames), -1, 3).mean(1) + 1.0
        return e / np.linalg.norm(e, axis=1, keepdims=True)


def colour_clips(n=60, f=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (n, 1, 1, 1, 3))
    noise = rng.integers(-8, 9, (n, f, size, size, 3))
    return np.clip(colours + noise, 0, 255).astype(np.uint8)


SCORERS = Scorers(frame_judge=ColourJudge(), video_judge=ColourJudge(), clip=MeanColourClip())


def test_perfect_prediction_scores_perfectly():
    truth = colour_clips()
    r = score(list(truth), list(truth), PROTOCOLS["mindvideo"], SCORERS, seed=1)
    m = r.metrics
    assert m["video_2way_top1"] == 1.0 and m["frame_50way_top1"] == 1.0
    assert m["ssim"] == pytest.approx(1.0) and m["psnr"] == 100.0
    assert m["clip_pcc_adjacent"] > 0.99
    assert r.frame_positions["frame_2way_top1"] == [1.0] * 6
    assert not r.skipped


def test_shuffled_prediction_is_near_chance_and_seeded():
    truth = colour_clips(n=200)
    pred = truth[np.random.default_rng(3).permutation(200)]
    proto = get_protocol("mindvideo", trials=50)
    a = score(list(pred), list(truth), proto, SCORERS, seed=7).metrics
    b = score(list(pred), list(truth), proto, SCORERS, seed=7).metrics
    assert a == b
    # Chance: 3 / (N + 2) = 0.75 with the ground truth's top-3 classes correct, 1/N strict.
    assert abs(a["video_2way_top1"] - 0.75) < 3 * a["video_2way_top1_se"] + 0.03
    assert abs(a["video_2way_top1_strict"] - 0.5) < 3 * a["video_2way_top1_strict_se"] + 0.03
    assert a["video_50way_top1"] < 0.2 and a["ssim"] < 0.5


def test_normalisation_resamples_frames_and_resizes():
    truth = colour_clips(n=4, f=6, size=16)
    pred = [np.repeat(np.repeat(np.repeat(c, 2, 0), 2, 1), 2, 2) for c in truth]  # 12 x 32px
    r = score(pred, list(truth), PROTOCOLS["mind-animator"], SCORERS)
    assert r.metrics["ssim"] > 0.6 and r.metrics["epe"] < 1.0 and r.metrics["hue_sim"] > 0.9
    np.testing.assert_array_equal(resample_frames(np.arange(12), 6), [0, 2, 4, 6, 8, 10])
    np.testing.assert_array_equal(resample_frames(np.arange(3), 6), [0, 0, 1, 1, 2, 2])
    assert normalise([truth[0]], 3, 8, 8).shape == (1, 3, 8, 8, 3)


def test_scene_cut_exclusion_and_missing_scorers():
    truth = colour_clips(n=10)
    cuts = np.zeros(10, bool)
    cuts[[2, 5]] = True
    proto = get_protocol("mindvideo", exclude_scene_cuts=True)
    r = score(list(truth), list(truth), proto, Scorers(), scene_cut=cuts)
    assert r.n_samples == 8 and r.excluded_scene_cuts == 2
    from mindvideo.eval.protocols import SEMANTIC

    assert set(r.skipped) == {*SEMANTIC, "clip_pcc_adjacent"}
    assert "ssim" in r.metrics
    with pytest.raises(DataError, match="no scene-cut flags"):
        score(list(truth), list(truth), proto, Scorers())


def test_bad_pairs_and_protocol_names():
    truth = colour_clips(n=3)
    with pytest.raises(DataError, match="2 predicted clips but 3 ground-truth clips"):
        score(list(truth[:2]), list(truth), PROTOCOLS["mindvideo"], SCORERS)
    with pytest.raises(ConfigError, match="unknown protocol 'mindvid'; available: mindvideo"):
        get_protocol("mindvid")


def test_extra_metrics_are_scored_after_the_protocols_own():
    proto = get_protocol("mindvideo", ["motion_direction", "ssim", "motion_speed"], trials=20)
    assert proto.metrics[-2:] == ("motion_direction", "motion_speed")
    assert proto.metrics.count("ssim") == 1 and proto.trials == 20
    truth = colour_clips(n=8)
    r = score(list(truth), list(truth), proto, SCORERS)
    assert {"motion_direction", "motion_speed", "motion_speed_se"} <= set(r.metrics)
    assert "motion_speed_truth" not in r.metrics and len(r.per_sample["motion_speed"]) == 8
    with pytest.raises(ConfigError, match=r"extra_metrics: unknown metric\(s\) 'motion'; av"):
        get_protocol("mindvideo", ["motion"])
