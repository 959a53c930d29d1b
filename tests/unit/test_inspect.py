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


def test_summary_only(smoke_dataset):
    report = inspect_dataset(smoke_dataset, validate=False)
    assert "checks" not in report
    assert "roi_recall" not in report["subjects"]["subject1"]
    assert report["subjects"]["subject1"]["test"]["repeats"] == [10]
