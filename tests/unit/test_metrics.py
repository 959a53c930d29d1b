"""Metric functions: agreement with scikit-image, hand-worked N-way cases, invariances."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mindvideo.eval import metrics as M


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def realistic_frames(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """(n, H, W, 3) uint8: smooth colour gradients, a bright disc, a dark bar, sensor noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for _ in range(n):
        a, b, c = rng.uniform(0.2, 1.0, 3)
        img = np.stack([255 * a * xx / w, 255 * b * yy / h, 255 * c * (xx + yy) / (h + w)], -1)
        cy, cx, r = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, rng.uniform(3, h / 3)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(150, 255, 3)
        x0 = int(rng.integers(0, w - 4))
        img[:, x0 : x0 + 3] *= 0.3
        img += rng.normal(0, 6, img.shape)
        frames.append(np.clip(np.rint(img), 0, 255))
    return np.stack(frames).astype(np.uint8)


def skimage_per_frame(pred: np.ndarray, target: np.ndarray):
    h, w = pred.shape[-3:-1]
    p, t = pred.reshape(-1, h, w, 3), target.reshape(-1, h, w, 3)
    s = [
        structural_similarity(a, b, channel_axis=-1, data_range=255)
        for a, b in zip(p, t, strict=True)
    ]
    q = [peak_signal_noise_ratio(b, a, data_range=255) for a, b in zip(p, t, strict=True)]
    return np.array(s).reshape(pred.shape[:-3]), np.array(q).reshape(pred.shape[:-3])


# ---------------------------------------------------------------- SSIM / PSNR


@pytest.mark.parametrize("shape", [(3, 7, 7, 3), (2, 3, 16, 23, 3), (4, 40, 33, 3)])
def test_ssim_psnr_match_skimage_on_random_frames(shape):
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 256, shape, dtype=np.uint8)
    # Correlated with pred so SSIM is far from 0 and errors in the structure term show.
    target = np.clip(pred.astype(int) + rng.integers(-40, 41, shape), 0, 255).astype(np.uint8)
    ref_ssim, ref_psnr = skimage_per_frame(pred, target)
    ours = M.ssim(pred, target)
    assert ours.shape == shape[:-3] and ours.dtype == np.float64
    np.testing.assert_allclose(ours, ref_ssim, rtol=0, atol=1e-6)
    np.testing.assert_allclose(M.psnr(pred, target), ref_psnr, rtol=0, atol=1e-6)


def test_ssim_psnr_match_skimage_on_realistic_clips():
    rng = np.random.default_rng(1)
    n, f, h, w = 2, 3, 48, 64
    gt = realistic_frames(rng, n * f, h, w).reshape(n, f, h, w, 3)
    blur = (gt.astype(float) + np.roll(gt, 2, axis=3) + np.roll(gt, -1, axis=2)) / 3
    pred = np.clip(blur + rng.normal(0, 10, gt.shape), 0, 255).astype(np.uint8)
    ref_ssim, ref_psnr = skimage_per_frame(pred, gt)
    assert 0.1 < ref_ssim.min() and ref_ssim.max() < 0.99  # a non-trivial regime
    np.testing.assert_allclose(M.ssim(pred, gt), ref_ssim, rtol=0, atol=1e-6)
    np.testing.assert_allclose(M.psnr(pred, gt), ref_psnr, rtol=0, atol=1e-6)
    # Float frames on the 0..255 scale give the same values as their uint8 originals.
    np.testing.assert_allclose(M.ssim(pred.astype(np.float64), gt), ref_ssim, atol=1e-6)


def test_ssim_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (2, 9, 11, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (2, 9, 11, 3), dtype=np.uint8)
    np.testing.assert_array_equal(M.ssim(torch.from_numpy(a), torch.from_numpy(b)), M.ssim(a, b))
    np.testing.assert_array_equal(M.psnr(torch.from_numpy(a), torch.from_numpy(b)), M.psnr(a, b))


def test_ssim_identical_is_one_and_symmetric():
    rng = np.random.default_rng(3)
    a = realistic_frames(rng, 3, 20, 24)
    b = realistic_frames(rng, 3, 20, 24)
    np.testing.assert_allclose(M.ssim(a, a), 1.0, atol=1e-12)
    np.testing.assert_allclose(M.ssim(a, b), M.ssim(b, a), atol=1e-12)
    assert (M.ssim(a, b) < 0.9).all()


def test_psnr_identical_is_inf_unless_capped():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    b = a.copy()
    b[1, 0, 0, 0] ^= 1  # one pixel off by one: MSE = 1 / 192
    db = M.psnr(a, b)
    assert np.isposinf(db[0])
    np.testing.assert_allclose(db[1], 10 * np.log10(255**2 * 192), atol=1e-9)
    np.testing.assert_allclose(M.psnr(a, b, max_db=60.0), [60.0, 60.0])


def test_ssim_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        M.ssim(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))
    with pytest.raises(ValueError, match="channel axis last"):
        M.ssim(np.zeros((3, 8, 8)), np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="7x7"):
        M.ssim(np.zeros((6, 8, 3)), np.zeros((6, 8, 3)))


# ---------------------------------------------------------------- N-way top-K


def one_hotish(rng: np.random.Generator, n: int, n_classes: int) -> np.ndarray:
    logits = rng.normal(0, 1, (n, n_classes))
    logits[np.arange(n), rng.integers(0, n_classes, n)] += 12
    return softmax(logits)


def probs_with_m_beating(n_classes: int, gt_class: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(1, C) GT probs peaked on gt_class and pred probs where exactly m classes beat it."""
    gt = np.full((1, n_classes), 0.1 / (n_classes - 1))
    gt[0, gt_class] = 0.9
    pred = np.full((1, n_classes), 0.01)
    pred[0, gt_class] = 0.1
    others = [c for c in range(n_classes) if c != gt_class]
    pred[0, others[:m]] = 0.5
    return pred / pred.sum(), gt


def test_perfect_prediction_scores_one():
    rng = np.random.default_rng(5)
    probs = one_hotish(rng, 50, 100)
    for n_way in (2, 50):
        assert (M.n_way_top_k(probs, probs, n_way, seed=1) == 1.0).all()
        assert (M.n_way_top_k(probs, probs, n_way, gt_top=1, seed=1) == 1.0).all()


@pytest.mark.parametrize("n_way", [2, 50])
def test_random_predictions_score_chance(n_way):
    # Predictions independent of the GT: the N-1 distractors and the G GT classes are
    # exchangeable, so P(success) = G / (N - 1 + G): 1/N strict, 3/(N+2) with the top-3 rule.
    rng = np.random.default_rng(6)
    n, n_classes = 3000, 200
    pred = softmax(rng.normal(0, 2, (n, n_classes)))
    gt = softmax(rng.normal(0, 2, (n, n_classes)))
    for gt_top in (1, 3):
        scores = M.n_way_top_k(pred, gt, n_way, trials=100, gt_top=gt_top, seed=7)
        chance = gt_top / (n_way - 1 + gt_top)
        se = scores.std(ddof=1) / np.sqrt(n)
        assert abs(scores.mean() - chance) < 3 * se, (gt_top, scores.mean(), chance, se)


def test_strict_variant_not_above_top3_on_average():
    rng = np.random.default_rng(8)
    gt = softmax(rng.normal(0, 2, (500, 100)))
    pred = softmax(np.log(gt) + rng.normal(0, 2, (500, 100)))  # informative but noisy
    for n_way in (2, 50):
        strict = M.n_way_expected(pred, gt, n_way, gt_top=1)
        top3 = M.n_way_expected(pred, gt, n_way, gt_top=3)
        assert strict.mean() < top3.mean()


def test_strict_can_beat_top3_for_one_sample():
    # C=5, GT ranking 0 > 1 > 2, pred has classes 3 and 4 above class 0 and classes 1, 2 below.
    # Top-3: the only distractors are {3, 4}, both beat p*=p(0): 2-way score 0.
    # Strict: distractor drawn from {1, 2, 3, 4}, 2 of 4 beat class 0: score 1 - 2/4 = 0.5.
    gt = np.array([[0.5, 0.2, 0.15, 0.1, 0.05]])
    pred = np.array([[0.2, 0.05, 0.05, 0.35, 0.35]])
    assert M.n_way_expected(pred, gt, 2, gt_top=3)[0] == 0.0
    np.testing.assert_allclose(M.n_way_expected(pred, gt, 2, gt_top=1), [0.5])


@pytest.mark.parametrize(
    ("n_classes", "m", "n_way", "top_k", "p_success"),
    [
        # C=6, G=1, m=1, N=2, K=1: the one distractor comes from 5 classes, 1 beats: 1 - 1/5.
        (6, 1, 2, 1, 0.8),
        # C=6, G=1, m=2, N=3, K=1: both distractors from the 3 non-beating: C(3,2)/C(5,2).
        (6, 2, 3, 1, 0.3),
        # Same, K=2: fails only if both beaters are drawn: 1 - C(2,2)/C(5,2).
        (6, 2, 3, 2, 0.9),
        # C=10, G=1, m=0: nothing beats the GT: always succeeds.
        (10, 0, 5, 1, 1.0),
        # C=10, G=1, m=9, N=4, K=3: all 3 distractors beat it, so it ranks 4th: never.
        (10, 9, 4, 3, 0.0),
    ],
)
def test_hand_worked_hypergeometric_cases(n_classes, m, n_way, top_k, p_success):
    pred, gt = probs_with_m_beating(n_classes, gt_class=2, m=m)
    expected = M.n_way_expected(pred, gt, n_way, top_k=top_k, gt_top=1)
    np.testing.assert_allclose(expected, [p_success], atol=1e-12)
    trials = 40_000
    sampled = M.n_way_top_k(pred, gt, n_way, top_k=top_k, trials=trials, gt_top=1, seed=9)
    assert abs(sampled[0] - p_success) <= 4 * np.sqrt(p_success * (1 - p_success) / trials)


def test_ties_go_to_the_ground_truth():
    # Every pred probability equal: no distractor beats a GT class, so every trial succeeds.
    rng = np.random.default_rng(10)
    pred = np.full((4, 12), 1 / 12)
    gt = softmax(rng.normal(size=(4, 12)))
    assert (M.n_way_top_k(pred, gt, 5, seed=0) == 1.0).all()
    assert (M.n_way_top_k(pred, gt, 5, trials=20, seed=0, method="loop") == 1.0).all()
    assert (M.n_way_expected(pred, gt, 5) == 1.0).all()


def test_gt_class_ties_break_to_lower_index():
    # Flat GT scores: the strict GT class is class 0. Pred puts class 0 last, so 2-way fails
    # always; had any other class been chosen, it would never fail.
    gt = np.zeros((1, 8))
    pred = np.array([[0.01, 0.2, 0.15, 0.14, 0.13, 0.13, 0.12, 0.12]])
    assert M.n_way_top_k(pred, gt, 2, gt_top=1, seed=0)[0] == 0.0
    assert M.n_way_top_k(pred, gt, 2, gt_top=1, trials=10, seed=0, method="loop")[0] == 0.0
    # Top-3 over flat GT scores is classes 0, 1, 2; class 1 is the pred's best: always wins.
    assert M.n_way_top_k(pred, gt, 2, gt_top=3, seed=0)[0] == 1.0


def test_logits_and_probabilities_give_the_same_scores():
    rng = np.random.default_rng(11)
    pred_logits = rng.normal(0, 2, (50, 40))
    gt_logits = rng.normal(0, 2, (50, 40))
    a = M.n_way_top_k(softmax(pred_logits), softmax(gt_logits), 10, seed=3)
    np.testing.assert_array_equal(M.n_way_top_k(softmax(pred_logits), gt_logits, 10, seed=3), a)


def test_seeding_is_reproducible():
    rng = np.random.default_rng(12)
    pred = softmax(rng.normal(0, 2, (200, 60)))
    gt = softmax(rng.normal(0, 2, (200, 60)))
    a = M.n_way_top_k(pred, gt, 10, seed=0)
    np.testing.assert_array_equal(a, M.n_way_top_k(pred, gt, 10, seed=0))
    np.testing.assert_array_equal(a, M.n_way_top_k(pred, gt, 10, seed=np.random.default_rng(0)))
    assert not np.array_equal(a, M.n_way_top_k(pred, gt, 10, seed=1))
    b = M.n_way_top_k(pred[:20], gt[:20], 10, trials=30, seed=0, method="loop")
    np.testing.assert_array_equal(
        b, M.n_way_top_k(pred[:20], gt[:20], 10, trials=30, seed=0, method="loop")
    )


@pytest.mark.parametrize(("n_way", "top_k", "gt_top"), [(2, 1, 3), (10, 1, 3), (10, 3, 1)])
def test_vectorised_and_loop_agree_in_distribution(n_way, top_k, gt_top):
    rng = np.random.default_rng(13)
    n, n_classes = 120, 30
    pred = softmax(rng.normal(0, 1.5, (n, n_classes)))
    gt = softmax(rng.normal(0, 1.5, (n, n_classes)))
    kwargs = dict(n_way=n_way, top_k=top_k, trials=100, gt_top=gt_top)
    fast = M.n_way_top_k(pred, gt, seed=0, **kwargs)
    loop = M.n_way_top_k(pred, gt, seed=0, **kwargs, method="loop")
    # Same inputs: per-sample differences are pure trial noise, centred on zero.
    d = fast - loop
    assert abs(d.mean()) < 4 * d.std(ddof=1) / np.sqrt(n) + 1e-12
    # Both are unbiased for the exact expectation.
    exact = M.n_way_expected(pred, gt, n_way, top_k=top_k, gt_top=gt_top)
    for scores in (fast, loop):
        r = scores - exact
        assert abs(r.mean()) < 4 * r.std(ddof=1) / np.sqrt(n) + 1e-12


def test_expected_matches_many_trials():
    rng = np.random.default_rng(14)
    pred = softmax(rng.normal(0, 2, (6, 100)))
    gt = softmax(rng.normal(0, 2, (6, 100)))
    exact = M.n_way_expected(pred, gt, 50, top_k=5)
    assert ((exact > 0.05) & (exact < 0.95)).any()  # some samples are not trivially 0 or 1
    trials = 20_000
    sampled = M.n_way_top_k(pred, gt, 50, top_k=5, trials=trials, seed=15)
    tol = 4 * np.sqrt(exact * (1 - exact) / trials) + 1e-12
    assert (np.abs(sampled - exact) <= tol).all()


def test_n_way_input_validation():
    p = softmax(np.zeros((3, 10)))
    with pytest.raises(ValueError, match="at least 2"):
        M.n_way_top_k(p, p, 1)
    with pytest.raises(ValueError, match="lower n_way"):
        M.n_way_top_k(p, p, 9, gt_top=3)  # 8 distractors, only 7 non-GT classes
    M.n_way_top_k(p, p, 8, gt_top=3)  # 7 distractors fit
    with pytest.raises(ValueError, match="top_k"):
        M.n_way_top_k(p, p, 5, top_k=0)
    with pytest.raises(ValueError, match="top_k"):
        M.n_way_top_k(p, p, 5, top_k=6)
    with pytest.raises(ValueError, match="same shape"):
        M.n_way_top_k(p, p[:2], 2)
    with pytest.raises(ValueError, match="NaN"):
        M.n_way_expected(np.full((1, 10), np.nan), p[:1], 2)
    with pytest.raises(ValueError, match="same shape"):
        M.n_way_top_k_frames(p, p, 2)


# ---------------------------------------------------------------- breakdown and summaries


def test_frame_breakdown_shapes_and_means():
    rng = np.random.default_rng(16)
    n, n_frames, n_classes = 7, 4, 30
    gt = softmax(rng.normal(0, 2, (n, n_frames, n_classes)))
    pred = gt.copy()
    pred[:, 2] = softmax(rng.normal(0, 2, (n, n_classes)))  # position 2 is wrong
    scores = M.n_way_top_k_frames(pred, gt, 10, seed=0)
    assert scores.shape == (n, n_frames)
    assert (scores[:, [0, 1, 3]] == 1.0).all() and scores[:, 2].mean() < 1.0
    summary = M.frame_position_summary(scores)
    assert summary["per_position"].shape == (n_frames,)
    assert summary["per_sample"].shape == (n,)
    np.testing.assert_allclose(summary["per_position"], scores.mean(axis=0))
    np.testing.assert_allclose(summary["mean"], scores.mean())


def test_summarise_proportion_and_mean():
    scores = np.array([0.0, 0.5, 1.0, 1.0, 0.75])
    out = M.summarise("frame_2way_top1", scores, seed=0)
    assert set(out) == {
        "frame_2way_top1",
        "frame_2way_top1_se",
        "frame_2way_top1_ci_low",
        "frame_2way_top1_ci_high",
    }
    np.testing.assert_allclose(out["frame_2way_top1"], 0.65)
    np.testing.assert_allclose(out["frame_2way_top1_se"], np.sqrt(0.65 * 0.35 / 5))
    x = np.array([0.1, 0.3, 0.2, 0.6])
    out = M.summarise("ssim", x, kind="mean")
    np.testing.assert_allclose(out["ssim_se"], np.std(x, ddof=1) / 2)
    with pytest.raises(ValueError, match="kind='mean'"):
        M.summarise("psnr", np.array([8.0, 9.0]))
    with pytest.raises(ValueError, match="max_db"):
        M.summarise("psnr", np.array([8.0, np.inf]), kind="mean")


def test_summarise_bootstrap_ci_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(17)
    x = rng.beta(2, 5, 400)
    a = M.summarise("clip_pcc_adjacent", x, kind="mean", seed=3)
    assert a["clip_pcc_adjacent_ci_low"] < a["clip_pcc_adjacent"] < a["clip_pcc_adjacent_ci_high"]
    # The 95% CI of a mean is about +-1.96 SE wide.
    width = a["clip_pcc_adjacent_ci_high"] - a["clip_pcc_adjacent_ci_low"]
    np.testing.assert_allclose(width, 2 * 1.96 * a["clip_pcc_adjacent_se"], rtol=0.15)
    assert a == M.summarise("clip_pcc_adjacent", x, kind="mean", seed=3)
    assert a != M.summarise("clip_pcc_adjacent", x, kind="mean", seed=4)


def test_metric_kinds():
    """The standard error each metric gets: the registry's kind (mindvideo/eval/registry.py)."""
    from mindvideo.eval.registry import metric_info

    assert metric_info("video_50way_top1").kind == "proportion"
    assert metric_info("frame_2way_top1").kind == "proportion"
    assert metric_info("epe").kind == "mean" and metric_info("ssim").kind == "mean"


# ---------------------------------------------------------------- CLIP-pcc, hue, EPE


def test_clip_pcc_hand_built():
    rng = np.random.default_rng(18)
    v = rng.normal(size=16)
    same = np.tile(v, (2, 5, 1)) * rng.uniform(0.5, 2, (2, 5, 1))  # scale does not matter
    np.testing.assert_allclose(M.clip_pcc(same, "adjacent"), [1.0, 1.0])
    np.testing.assert_allclose(M.clip_pcc(same, "allpairs"), [1.0, 1.0])
    a, b = np.eye(16)[0], np.eye(16)[1]
    alternating = np.stack([a, b, a, b])[None]  # (1, 4, 16)
    np.testing.assert_allclose(M.clip_pcc(alternating, "adjacent"), [0.0], atol=1e-12)
    # Pairs (0,2) and (1,3) are identical, the other 4 of 6 orthogonal: 2/6.
    np.testing.assert_allclose(M.clip_pcc(alternating, "allpairs"), [1 / 3])
    with pytest.raises(ValueError, match="variant"):
        M.clip_pcc(same, "pairs")
    with pytest.raises(ValueError, match="F>=2"):
        M.clip_pcc(same[:, :1], "adjacent")


def solid_clip(rgb, n_frames: int = 3, size: int = 16) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (1, n_frames, size, size, 3)).copy()


def test_hue_histogram_bins():
    red, green, blue = solid_clip((255, 0, 0)), solid_clip((0, 255, 0)), solid_clip((0, 0, 255))
    for clip, hue_bin in ((red, 0), (green, 60), (blue, 120)):
        hist = M.hue_histograms(clip)
        assert hist.shape == (1, 3, M.HUE_BINS)
        np.testing.assert_allclose(hist[..., hue_bin], 1.0)


def test_hue_sim_identical_high_red_vs_blue_low():
    rng = np.random.default_rng(19)
    clip = realistic_frames(rng, 4, 24, 24).reshape(2, 2, 24, 24, 3)
    np.testing.assert_allclose(M.hue_sim(clip, clip), [1.0, 1.0])
    red, blue = solid_clip((220, 10, 10)), solid_clip((10, 10, 220))
    # Two different one-bin histograms over 180 bins correlate at -1/179.
    np.testing.assert_allclose(M.hue_sim(red, blue), [-1 / 179], atol=1e-12)


def square_clip(step: int, n_frames: int = 4) -> np.ndarray:
    """(1, F, 64, 64, 3): a textured 24-pixel square moving `step` pixels right per frame."""
    texture = np.random.default_rng(20).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    frames = np.full((n_frames, 64, 64, 3), 40, np.uint8)
    for f in range(n_frames):
        x0 = 10 + step * f
        frames[f, 20:44, x0 : x0 + 24] = texture
    return frames[None]


def test_epe():
    moving, static = square_clip(step=2), square_clip(step=0)
    np.testing.assert_array_equal(M.epe(moving, moving), [0.0])
    assert M.epe(moving, static)[0] > 0.5
    with pytest.raises(ValueError, match="at least 2"):
        M.epe(moving[:, :1], static[:, :1])


def test_motion_direction_and_speed():
    right = square_clip(step=2)
    left = right[:, ::-1]  # the same frames backwards: the square moves left
    down = right.transpose(0, 1, 3, 2, 4)  # rows and columns swapped: it moves down
    static = square_clip(step=0)
    clips = np.concatenate([right, left, down, static])
    truth = np.concatenate([right] * 4)
    m = M.motion(clips, truth)
    assert m["motion_direction"][0] == pytest.approx(1.0)
    assert m["motion_direction"][1] < -0.9
    assert abs(m["motion_direction"][2]) < 0.2
    assert m["motion_direction"][3] == 0.0  # a still clip has no direction
    np.testing.assert_allclose(m["motion_speed_truth"], m["motion_speed"][0])
    assert m["motion_speed"][3] == 0.0 < m["motion_speed"][0]
    # the square covers 14% of the frame and moves 2 px a frame
    assert 0.1 < m["motion_speed"][0] < 2.0
    with pytest.raises(ValueError, match="shapes differ"):
        M.motion(clips, truth[:2])
    with pytest.raises(ValueError, match="at least 2"):
        M.motion(right[:, :1], right[:, :1])


def test_n_way_refuses_an_unknown_method():
    pred = softmax(np.random.default_rng(14).normal(size=(3, 10)))
    with pytest.raises(ValueError, match="method 'exact'; use 'hypergeometric' or 'loop'"):
        M.n_way_top_k(pred, pred, 2, method="exact")
