import numpy as np

from mindvideo.models.ridge import RidgeDecoder, retrieve


def test_ridge_recovers_a_linear_map_and_picks_alpha_by_cv():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((50, 4))
    x = rng.standard_normal((400, 50))
    y = x @ w + 0.1 * rng.standard_normal((400, 4))
    groups = np.repeat(np.arange(8), 50)
    dec = RidgeDecoder(alphas=(1e-2, 1e1, 1e6)).fit(x, y, groups)
    assert dec.alpha != 1e6  # heavy shrinkage loses the signal
    x_new = rng.standard_normal((100, 50))
    pred = dec.predict(x_new)
    assert np.corrcoef(pred.ravel(), (x_new @ w).ravel())[0, 1] > 0.99


def test_decoding_then_retrieval_finds_the_seen_clip():
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((300, 20))  # clip features
    w = rng.standard_normal((20, 80))
    x = feats @ w + 2.0 * rng.standard_normal((300, 80))  # noisy "fMRI" driven by features
    dec = RidgeDecoder().fit(x[:200], feats[:200], np.repeat(np.arange(4), 50))
    hits = retrieve(dec.predict(x[200:]), feats[200:], top_k=1)[:, 0] == np.arange(100)
    shuffled = retrieve(dec.predict(x[200:][rng.permutation(100)]), feats[200:], 1)[:, 0]
    assert hits.mean() > 0.5 and (shuffled == np.arange(100)).mean() < 0.1


def test_retrieve_returns_best_matches_first():
    bank = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0.9, 0.1, 0, 0]])
    query = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0.2]])
    idx = retrieve(query, bank, top_k=2)
    assert idx[0].tolist() == [0, 3]
    assert idx[1, 0] == 2
    assert retrieve(query, bank, top_k=10).shape == (2, 4)
