import numpy as np
import pytest

from mindvideo.data.hcp import open_corpus
from mindvideo.errors import DataError


def test_simulated_corpus_loads_on_its_roi(smoke_dataset, smoke_profile):
    corpus = open_corpus(smoke_dataset / "hcp")
    c = smoke_profile.data.synth.corpus
    assert corpus.subjects() == [f"synth{i + 1:03d}" for i in range(c.subjects)]
    assert len(corpus.runs) == c.subjects * c.runs
    assert corpus.volumes() == c.subjects * c.runs * c.trs
    run = next(iter(corpus))
    assert run.shape == (c.trs, corpus.n_voxels)
    assert 0 < corpus.n_voxels < corpus.mask.size
    np.testing.assert_allclose(run.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(run.std(0), 1, atol=1e-3)


def test_mask_of_another_mesh_is_refused(smoke_dataset, tmp_path):
    np.save(tmp_path / "mask.npy", np.ones(100, bool))
    with pytest.raises(DataError, match="the mask has 100 entries but the fMRI files have 512"):
        open_corpus(smoke_dataset / "hcp", tmp_path / "mask.npy")


def test_empty_corpus_folder(tmp_path):
    with pytest.raises(DataError, match="no runs named like"):
        open_corpus(tmp_path)
