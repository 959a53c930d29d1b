import hashlib
import json

import numpy as np
import pytest

from mindvideo.data.cifti import dtseries_info
from mindvideo.data.synth.simulate import simulate
from mindvideo.errors import ConfigError, DataError


def tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_follows_cc2017(smoke_dataset, smoke_profile):
    p = smoke_profile.data.synth.protocol
    meta = json.loads((smoke_dataset / "dataset.json").read_text())
    assert meta["segments"]["train"] == [f"seg{k}" for k in range(1, p.train_segments + 1)]
    assert meta["segments"]["test"] == [f"test{k}" for k in range(1, p.test_segments + 1)]
    assert meta["profile"] == "smoke"
    for subject in meta["subjects"]:
        for split, reps in (("train", p.train_repeats), ("test", p.test_repeats)):
            for seg in meta["segments"][split]:
                for r in range(1, reps + 1):
                    f = (
                        smoke_dataset
                        / subject
                        / "fmri"
                        / seg
                        / "cifti"
                        / f"{seg}_{r}_Atlas.dtseries.nii"
                    )
                    assert f.exists(), f
        info = dtseries_info(
            smoke_dataset / subject / "fmri/test1/cifti/test1_10_Atlas.dtseries.nii"
        )
        assert (info.tr, info.n_volumes, info.n_cortical) == (p.tr, p.test_trs, 512)
    frames = np.load(smoke_dataset / "stimuli" / "seg1.npy")
    assert frames.shape == (p.train_trs * 12, 32, 32, 3) and frames.dtype == np.uint8
    for name in ("seg1_frames.csv", "seg1_clips.csv", "seg1_scenes.csv", "classes.json"):
        assert (smoke_dataset / "stimuli" / name).exists()
    truth = np.load(smoke_dataset / "truth" / "subject1.npz")
    assert {"region", "hrf_peak_s", "prf_x", "prf_y", "prf_sigma", "snr"} <= set(truth.files)
    assert (smoke_dataset / "hcp" / "roi_mask.npy").exists()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, smoke_profile, smoke_dataset):
    cfg = smoke_profile.data.synth
    simulate(cfg, tmp_path / "a", extra={"profile": "smoke"})
    assert tree_digest(tmp_path / "a") == tree_digest(smoke_dataset)
    simulate(cfg.model_copy(update={"seed": 1}), tmp_path / "b", extra={"profile": "smoke"})
    a = np.load(tmp_path / "a" / "stimuli" / "seg1.npy")
    b = np.load(tmp_path / "b" / "stimuli" / "seg1.npy")
    assert not np.array_equal(a, b)


def test_refuses_to_write_into_a_full_folder(tmp_path, smoke_profile):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="folder exists and is not empty"):
        simulate(smoke_profile.data.synth, tmp_path / "out")
    with pytest.raises(DataError, match="not a SynthCC dataset .* will not delete it"):
        simulate(smoke_profile.data.synth, tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"
    with pytest.raises(DataError, match="is a file, not a folder"):
        simulate(smoke_profile.data.synth, tmp_path / "out" / "mine.txt")


def test_interrupted_simulation_leaves_nothing_behind(tmp_path, smoke_profile):
    def boom(n, what):
        if what.startswith("subject1"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate(smoke_profile.data.synth, tmp_path / "out", progress=boom)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "out.partial").exists()


def test_tr_and_fps_must_give_whole_frames(tmp_path, smoke_profile):
    cfg = smoke_profile.data.synth
    bad = cfg.model_copy(
        update={
            "world": cfg.world.model_copy(update={"fps": 5}),
            "protocol": cfg.protocol.model_copy(update={"tr": 0.7}),
        }
    )
    with pytest.raises(ConfigError, match="whole number of frames per TR"):
        simulate(bad, tmp_path / "out")


def test_synthcc_v2_gets_new_keys_and_v1_keeps_its_own():
    from harness.cache import key_config
    from harness.profiles import load_profile
    from mindvideo.stages.registry import get_stage

    for name in ("simulate", "video_pretrain"):  # the stages that render the world
        stage = get_stage(name)
        v1, v2 = (
            key_config(
                stage.configure(load_profile("tiny", {"data.synth.version": v}), "subject1"),
                stage.key_neutral,
            )
            for v in (1, 2)
        )
        world = v1["world"]
        assert "motion" not in world and "version" not in v1  # as before v2 existed
        assert v2["world"]["motion"] == "wrap" and v2["world"]["speed_range"] == [0.2, 0.5]
