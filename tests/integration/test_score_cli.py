"""mvbench data export / score / baselines on the smoke dataset (judges and CLIP trained once)."""

import json
import shutil

import numpy as np
import pytest

from harness.cli import main

STORE: list = []  # the module's store: its stage cache holds the dataset's judges and CLIP


def run(capsys, *argv):
    if argv[0] in ("score", "baselines"):
        argv = (*argv, "--store", STORE[0])
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture(scope="module")
def dataset(smoke_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("score") / "synthcc"
    shutil.copytree(smoke_dataset, root)
    STORE[:] = [root.parent / "store"]
    return root


@pytest.fixture(scope="module")
def truth_dir(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("truth") / "clips"
    assert main(["data", "export", str(dataset), "--split", "test", "--out", str(out)]) == 0
    return out


def test_export_writes_named_clips(truth_dir):
    files = sorted(p.name for p in truth_dir.glob("*.npy"))
    assert len(files) == 2 * 40 and files[0] == "test1_000.npy"
    assert np.load(truth_dir / "test1_000.npy").shape == (6, 32, 32, 3)
    assert json.loads((truth_dir / "source.json").read_text())["split"] == "test"


@pytest.mark.slow  # 15 s; the metrics' known values are unit-tested in test_metrics
def test_truth_scored_against_itself_is_perfect(dataset, truth_dir, capsys):
    motion = ["--metric", "motion_direction", "--metric", "motion_speed"]
    code, out, _ = run(
        capsys, "score", "--pred", truth_dir, "--truth", dataset, "--json", "--quiet", *motion
    )
    assert code == 0
    m = json.loads(out)["metrics"]
    assert m["video_2way_top1"] == 1.0 and m["frame_2way_top1"] == 1.0
    assert m["motion_direction"] > 0.9 and m["motion_speed"] > 0  # still clips count 0
    assert m["video_2way_top1_strict"] == 1.0
    assert m["ssim"] == pytest.approx(1.0) and m["psnr"] == 100.0
    # trained by the foundation stage into the store's cache, not into the dataset folder
    (entry,) = [p for p in (STORE[0] / "cache" / "foundation").iterdir() if p.is_dir()]
    assert (entry / "judges" / "metrics.json").exists() and (
        entry / "clip" / "metrics.json"
    ).exists()
    assert not (dataset / "judges").exists() and not (dataset / "clip").exists()


@pytest.mark.slow  # the default run's 4-minute budget; CI's slow tier runs it
def test_shuffled_predictions_score_near_chance(dataset, truth_dir, tmp_path, capsys):
    names = sorted(p.stem for p in truth_dir.glob("*.npy"))
    perm = np.random.default_rng(0).permutation(len(names))
    pred = tmp_path / "shuffled"
    pred.mkdir()
    for src, dst in zip(names, np.array(names)[perm], strict=True):
        shutil.copy(truth_dir / f"{src}.npy", pred / f"{dst}.npy")
    code, out, _ = run(
        capsys,
        "score",
        "--pred",
        pred,
        "--truth",
        truth_dir,
        "--json",
        "--quiet",
        "--protocol",
        "mind-animator",
    )
    assert code == 0
    m = json.loads(out)["metrics"]
    # The smoke judges are barely trained (a judge that always prefers the same classes scores
    # everything high: N-way is only as meaningful as its judge), so chance levels are checked
    # with discriminating judges in test_protocols.py and on tiny in the slow tests.
    assert m["frame_2way_top1_strict"] < 1.0 and m["ssim"] < 0.9
    assert m["epe"] > 0 and "hue_sim" in m and "clip_pcc_allpairs" in m
    code, out, _ = run(capsys, "score", "--pred", pred, "--truth", truth_dir, "--quiet")
    assert code == 0 and "video_2way_top1" in out and "95% CI" in out
    # each call is tracked in the store's MLflow, as a suite's runs are
    from mlflow import MlflowClient

    from harness.tracking import default_uri

    client = MlflowClient(tracking_uri=default_uri(STORE[0]))
    exp = client.get_experiment_by_name("mvbench-score")
    tracked = client.search_runs([exp.experiment_id], "tags.`mvbench.kind` = 'run'")
    shuffled = [r for r in tracked if r.info.run_name == "shuffled"]
    assert len(shuffled) == 2 and all(r.info.status == "FINISHED" for r in shuffled)
    assert shuffled[0].data.metrics["ssim"] == pytest.approx(m["ssim"])
    assert shuffled[0].data.params["truth"] in (str(dataset), str(truth_dir))


def test_gif_reconstructions_are_scored(dataset, truth_dir, tmp_path, capsys):
    gifs = tmp_path / "gifs"
    assert main(["data", "export", str(dataset), "--out", str(gifs), "--format", "gif"]) == 0
    capsys.readouterr()
    code, out, _ = run(
        capsys,
        "score",
        "--pred",
        gifs,
        "--truth",
        gifs,
        "--json",
        "--quiet",
        "--exclude-scene-cuts",
    )
    report = json.loads(out)
    assert code == 0 and report["metrics"]["ssim"] == pytest.approx(1.0)
    assert report["n_samples"] + report["excluded_scene_cuts"] == 80


def test_bad_input_names_the_file(dataset, truth_dir, tmp_path, capsys):
    pred = tmp_path / "pred"
    shutil.copytree(truth_dir, pred)
    (pred / "test2_019.npy").unlink()
    code, _, err = run(capsys, "score", "--pred", pred, "--truth", truth_dir, "--quiet")
    assert code == 2 and "1 ground-truth clips have no prediction (e.g. test2_019)" in err
    (pred / "test1_003.npy").write_bytes(b"garbage")
    code, _, err = run(capsys, "score", "--pred", pred, "--truth", dataset, "--quiet")
    assert code == 2 and "test1_003.npy: cannot read" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "score", "--pred", empty, "--truth", dataset, "--quiet")
    assert code == 2 and "no clips" in err
    odd = tmp_path / "odd"
    odd.mkdir()
    np.save(odd / "clip_a.npy", np.zeros((6, 32, 32, 3), np.uint8))
    code, _, err = run(capsys, "score", "--pred", odd, "--truth", dataset, "--quiet")
    assert code == 2 and "name each clip <segment>_<clip>" in err
    code, _, err = run(
        capsys, "score", "--pred", truth_dir, "--truth", dataset, "--protocol", "mindvid"
    )
    assert code == 2 and "unknown protocol 'mindvid'" in err


def test_baselines_run_and_score(dataset, tmp_path, capsys):
    out = tmp_path / "baselines"
    code, stdout, _ = run(
        capsys, "baselines", dataset, "--subjects", "subject1", "--json", "--quiet", "--out", out
    )
    assert code == 0
    rows = json.loads(stdout)["subject1"]
    assert set(rows) == {"ridge", "shuffled", "random-train-clip"}
    for m in rows.values():
        assert 0 <= m["video_2way_top1"] <= 1 and "ssim" in m
    clips = np.load(out / "subject1" / "ridge" / "clips.npy")
    assert clips.shape == (2 * 37, 6, 32, 32, 3)
    assert (out / "metrics.json").exists()
    from mlflow import MlflowClient

    from harness.tracking import default_uri

    client = MlflowClient(tracking_uri=default_uri(STORE[0]))
    exp = client.get_experiment_by_name("mvbench-baselines")
    tracked = client.search_runs([exp.experiment_id], "tags.`mvbench.kind` = 'run'")
    assert {r.info.run_name for r in tracked} >= {"ridge / subject1", "shuffled / subject1"}


def test_an_unknown_extra_metric_is_named(dataset, truth_dir, capsys):
    argv = ["score", "--pred", truth_dir, "--truth", dataset, "--metric", "motion"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "unknown metric(s) 'motion'" in err and "motion_direction" in err
