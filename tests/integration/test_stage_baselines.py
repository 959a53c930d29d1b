"""The baselines stage's decoding: the in-process memo of a subject's fit changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from mindvideo.eval import baselines as B


@pytest.mark.slow  # the default run's 4-minute budget; CI's slow tier runs it
def test_memoised_fit_gives_the_same_reconstructions(smoke_dataset, one_torch_thread):
    B._MEMO.clear()
    cfg = B.BaselinesConfig(
        features=("pixels", "labels"), methods=("ridge", "shuffled", "random-train-clip")
    )
    fresh = B.decode_baselines(smoke_dataset, cfg, None, seed=3)
    assert not B._MEMO
    calls = []
    first = B.decode_baselines(
        smoke_dataset, cfg.model_copy(update={"methods": ("ridge",)}), None, 3, memo_key="m"
    )
    second = B.decode_baselines(
        smoke_dataset,
        cfg.model_copy(update={"methods": ("shuffled", "random-train-clip")}),
        None,
        3,
        progress=lambda n, what: calls.append(what),
        memo_key="m",
    )
    assert not any("preprocessed" in c or "fitted" in c for c in calls)  # reused
    assert len(B._MEMO) == 1
    np.testing.assert_array_equal(first.clips["ridge"], fresh.clips["ridge"])
    # shuffled and chance draw from the seed in the same order as in one call
    np.testing.assert_array_equal(second.clips["shuffled"], fresh.clips["shuffled"])
    assert first.ridge_alpha == fresh.ridge_alpha
    np.testing.assert_array_equal(first.truth, fresh.truth)
    other = B.decode_baselines(
        smoke_dataset, cfg.model_copy(update={"subject": "subject2"}), None, 3, memo_key="m"
    )
    assert len(B._MEMO) == 2 and not np.array_equal(other.clips["ridge"], first.clips["ridge"])
    # the same seed draws other chance clips for another subject
    assert not np.array_equal(other.clips["random-train-clip"], fresh.clips["random-train-clip"])
    B._MEMO.clear()
