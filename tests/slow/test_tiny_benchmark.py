"""The tiny profile's promises: validated benchmark at default SNR (one to two minutes: slow)."""

import pytest

from harness.profiles import load_profile
from mindvideo.data.inspect import inspect_dataset
from mindvideo.data.synth.simulate import simulate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    profile = load_profile("tiny")
    out = tmp_path_factory.mktemp("tiny") / "synthcc"
    simulate(profile.data.synth, out)
    d = profile.data
    return inspect_dataset(out, d.preprocess, d.window, d.window_offset, d.window_edge)


def test_tiny_meets_the_benchmark_validation(tiny_report):
    assert tiny_report["valid"], [c for c in tiny_report["checks"] if not c["passed"]]
    assert len(tiny_report["subjects"]) == 3
    for entry in tiny_report["subjects"].values():
        assert entry["roi_recall"] >= 0.9
        assert entry["roi_false_positive_rate"] <= 0.05
        assert abs(entry["lag_peak_tr"] - entry["true_lag_tr"]) <= 1
        assert entry["train"]["samples"] >= 1000 and entry["test"]["samples"] >= 200
