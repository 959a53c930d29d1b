"""The `paper` profile: `${VAR}` paths in profiles, and its whole code path end to end through
`mvbench run` on tiny files in the real formats (CC2017 CIFTI runs and converted stimuli, an
HCP-style corpus and CIFTI ROI mask, an SD 1.5 diffusers folder, an open_clip checkpoint, ViT and
VideoMAE judges saved with save_pretrained). Only sizes are overridden; paths come from the
environment variables the profile documents."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    make_cc2017,
    make_hcp_corpus,
    small_axis,
    tiny_open_clip_checkpoint,
    tiny_videomae_judge,
    tiny_vit_judge,
    write_layout,
    write_movie,
    write_sd_folder,
    write_spec,
    write_stimuli,
)

from harness.cli import main
from harness.profiles import load_profile
from mindvideo.data.cifti import write_dscalar
from mindvideo.errors import ConfigError, DataError

# The profile's variables and the keys they fill (experiments/profiles/paper.yaml).
VARIABLES = {
    "MINDVIDEO_CC2017_ROOT": "data.root",
    "MINDVIDEO_CORPUS_ROOT": "data.corpus_root",
    "MINDVIDEO_CORPUS_MASK": "data.corpus_mask",
    "MINDVIDEO_SD15": "diffusion.pretrained",
    "MINDVIDEO_CLIP_CHECKPOINT": "eval.clip_checkpoint",
    "MINDVIDEO_CLIP_MODEL": "eval.clip_model",
    "MINDVIDEO_FRAME_JUDGE": "eval.frame_judge",
    "MINDVIDEO_VIDEO_JUDGE": "eval.video_judge",
}
CLIP_NAME = "mvbench-test-paper"  # a tiny open_clip architecture standing in for ViT-L-14

# The paper's pipeline at toy sizes: widths, depths, epochs, steps, batch sizes, hold-outs, and
# retrieval among 4 candidates (the 9 test clips hold 3 scenes; the paper's 1,200 allow 50).
SIZES = """
overrides:
  mbm.model.embed_dim: 32
  mbm.model.depth: 1
  mbm.model.num_heads: 2
  mbm.model.decoder_embed_dim: 16
  mbm.model.decoder_depth: 1
  mbm.model.decoder_num_heads: 2
  mbm.epochs: 2
  mbm.batch_size: 16
  mbm.warmup_epochs: 1
  mbm.holdout_subjects: 1
  contrastive.epochs: 2
  contrastive.batch_size: 8
  contrastive.retrieval_n: 4
  cotrain.epochs: 1
  cotrain.batch_size: 4
  cotrain.warmup_steps: 2
  cotrain.val_clips: 4
  decode.steps: 2
  decode.batch_size: 16
  decode.samples: 2
  eval.samples: 2
"""
SUITE = (
    """
suite: paper-e2e
profile: paper
seeds: [0]
subjects: [subject1]
variants: {full: {}}
reference: full
report:
  metrics: [video_2way_top1, frame_2way_top1, ssim, psnr, clip_pcc_adjacent,
            retrieval4_image_top1]
  samples: 2
"""
    + SIZES
)


@pytest.fixture(autouse=True)
def _no_paper_variables(monkeypatch):
    """Each test starts with none of the profile's variables set."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------------
# ${VAR} expansion in profiles


def write_profile(folder, body: str):
    path = folder / "p.yaml"
    path.write_text("profile: p\ndata:\n  source: cc2017\n" + body)
    return path


def test_a_set_variable_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("MVTEST_ROOT", str(tmp_path))
    path = write_profile(tmp_path, "  root: ${MVTEST_ROOT}\n")
    assert load_profile(str(path)).required("data.root") == str(tmp_path)


def test_an_embedded_reference_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("MVTEST_ROOT", "/data")
    monkeypatch.setenv("MVTEST_SUB", "cc2017")
    path = write_profile(tmp_path, "  root: ${MVTEST_ROOT}/${MVTEST_SUB}/video_fmri_dataset\n")
    assert load_profile(str(path)).data.root == "/data/cc2017/video_fmri_dataset"


def test_an_unset_variable_loads_and_fails_where_needed(tmp_path, monkeypatch):
    monkeypatch.delenv("MVTEST_ROOT", raising=False)
    path = write_profile(tmp_path, "  root: ${MVTEST_ROOT}/sub\n")
    profile = load_profile(str(path))  # validation passes: the value is not given yet
    assert profile.data.root is None
    with pytest.raises(ConfigError) as e:
        profile.required("data.root")
    text = str(e.value)
    for part in (str(path), "data.root", "${MVTEST_ROOT}/sub", "MVTEST_ROOT is not set"):
        assert part in text, part
    assert "export MVTEST_ROOT=" in text and "--set data.root=PATH" in text


def test_an_empty_variable_counts_as_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("MVTEST_ROOT", "")
    path = write_profile(tmp_path, "  root: ${MVTEST_ROOT}\n")
    with pytest.raises(ConfigError, match="MVTEST_ROOT is not set"):
        load_profile(str(path)).required("data.root")


def test_set_overrides_an_unset_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("MVTEST_ROOT", raising=False)
    path = write_profile(tmp_path, "  root: ${MVTEST_ROOT}\n")
    profile = load_profile(str(path), {"data.root": "/given"})
    assert profile.required("data.root") == "/given"
    # an override of the whole section wins too
    profile = load_profile(str(path), {"data": {"source": "cc2017", "root": "/x"}})
    assert profile.required("data.root") == "/x"


def test_an_unset_variable_in_a_field_that_needs_a_value(tmp_path, monkeypatch):
    monkeypatch.delenv("MVTEST_STEPS", raising=False)
    path = write_profile(tmp_path, "decode: {steps: '${MVTEST_STEPS}'}\n")
    with pytest.raises(ConfigError, match=r"decode.steps: \$\{MVTEST_STEPS\} but MVTEST_STEPS"):
        load_profile(str(path))
    monkeypatch.setenv("MVTEST_STEPS", "7")
    assert load_profile(str(path)).decode.steps == 7


def test_other_shell_syntax_is_refused_not_evaluated(tmp_path, monkeypatch):
    monkeypatch.setenv("MVTEST_ROOT", "/data")
    for text in ("${MVTEST_ROOT:-/tmp}", "$(echo /tmp)${", "${MVTEST ROOT}"):
        path = write_profile(tmp_path, f"  root: '{text}'\n")
        with pytest.raises(ConfigError, match=r"data.root: .*write environment variables as"):
            load_profile(str(path))
    path = write_profile(tmp_path, "  root: $MVTEST_ROOT/x\n")  # no braces: a plain string
    assert load_profile(str(path)).data.root == "$MVTEST_ROOT/x"


# ---------------------------------------------------------------------------------------------
# The paper profile without its variables: it validates; plan and run stop early


def test_paper_validates_without_its_variables():
    profile = load_profile("paper")
    dumped = str(profile.model_dump())
    assert "${" not in dumped  # no placeholder passes for a path
    assert profile.data.root is None and profile.diffusion.pretrained is None
    for name, key in VARIABLES.items():
        with pytest.raises(ConfigError, match=rf"{key}: \$\{{{name}\}} but {name} is not set"):
            profile.required(key)


def test_plan_and_run_without_variables_name_the_variable(tmp_path, capsys):
    spec = write_spec(tmp_path, SUITE)
    store = tmp_path / "store"
    for args in (["plan"], ["run", "--quiet"]):
        assert main([*args, str(spec), "--store", str(store)]) == 2
        err = capsys.readouterr().err
        assert "paper.yaml: data.root: ${MINDVIDEO_CC2017_ROOT}" in err
        assert "export MINDVIDEO_CC2017_ROOT=" in err and "--set data.root=PATH" in err
        # and every other unset variable at once, not one per attempt
        others = err.split("also unset in this profile")[1]
        for name, key in VARIABLES.items():
            if key != "data.root":
                assert f"{name} ({key})" in others
    assert not (store / "cache").exists()  # nothing ran


# ---------------------------------------------------------------------------------------------
# The paper code path on tiny real-format files


@pytest.fixture(scope="module")
def paper_files(tmp_path_factory) -> dict[str, str]:
    """Every file the paper profile reads, tiny, in its real format: variable -> value."""
    root = tmp_path_factory.mktemp("paper")
    cc2017 = root / "video_fmri_dataset"
    train, test = (("seg1", 2), ("seg2", 2)), (("test1", 3),)
    make_cc2017(cc2017, "subject1", train=train, test=test, n_tr=12)
    write_stimuli(cc2017, {"seg1": 12, "seg2": 12, "test1": 12})
    corpus = make_hcp_corpus(root / "hcp", subjects=3, n_tr=40)
    roi = np.zeros(44)  # a visual ROI: 32 of the 40 cortical vertices (2 patches of 16)
    roi[4:36] = 1
    write_dscalar(root / "visual_roi.dscalar.nii", roi, small_axis(), "visual")
    write_sd_folder(root / "stable-diffusion-v1-5", cond_dim=768)  # SD 1.5's condition width
    clip = tiny_open_clip_checkpoint(root / "open_clip_pytorch_model.bin", CLIP_NAME, root / "arch")
    return {
        "MINDVIDEO_CC2017_ROOT": str(root),  # the parent of video_fmri_dataset/
        "MINDVIDEO_CORPUS_ROOT": str(corpus),
        "MINDVIDEO_CORPUS_MASK": str(root / "visual_roi.dscalar.nii"),
        "MINDVIDEO_SD15": str(root / "stable-diffusion-v1-5"),
        "MINDVIDEO_CLIP_CHECKPOINT": str(clip),
        "MINDVIDEO_CLIP_MODEL": CLIP_NAME,
        "MINDVIDEO_FRAME_JUDGE": str(tiny_vit_judge(root / "vit-base-patch16-224")),
        "MINDVIDEO_VIDEO_JUDGE": str(tiny_videomae_judge(root / "videomae-base-kinetics")),
    }


@pytest.fixture
def paper_env(paper_files, monkeypatch) -> dict[str, str]:
    for name, value in paper_files.items():
        monkeypatch.setenv(name, value)
    return paper_files


def test_plan_reads_the_paths_from_the_environment(paper_env, tmp_path, capsys):
    spec = write_spec(tmp_path, SUITE)
    assert main(["plan", str(spec), "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    for stage in ("foundation", "mbm", "contrastive", "diffusion", "cotrain", "decode"):
        assert f"{stage} 1 (0 cached)" in out, stage
    assert "align" not in out  # MinD-Video: the encoder's condition goes to SD as it is
    # what the runs pair, from their headers: 2 training segments of 12 TRs (repeats averaged)
    # and one test segment, every TR a sample under the paper's clamped windows
    assert (
        "samples of subject1: train 24, test 12 (window 2 from 2 TRs after the clip, edge clamp)"
        in out
    )


def test_inspect_estimates_the_lag_of_real_shaped_data(paper_env, tmp_path, capsys):
    """CIFTI runs with frames and captions but no annotations or truth: the encoding model's
    lag curve is printed and drawn. Under the paper's selection (Bonferroni) three segments
    select no voxel: inspect says so and summarises the rest on the most reproducible half."""
    root = Path(paper_env["MINDVIDEO_CC2017_ROOT"])
    figure = tmp_path / "lag.png"
    args = ["data", "inspect", str(root), "--profile", "paper", "--figure", str(figure)]
    assert main([*args, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "encoding lag (held-out r of a stimulus-feature model" in out
    assert "subject1: voxel selection: " in out and "no voxel passes" in out
    assert "most reproducible 0.5 of voxels (20), unthresholded" in out
    assert "the profile's window starts at 2" in out
    line = next(x for x in out.splitlines() if x.startswith("  subject1: "))
    assert len(line.split()) == 1 + 7 and line.count("[") == 1  # lags 0..6, one peak
    assert figure.stat().st_size > 1000


def test_prepare_then_plan_the_paper_profile_on_the_release(
    paper_env, tmp_path, monkeypatch, capsys
):
    """The release's movies (mp4) prepared into frames and scene cuts, then planned under the
    paper profile: the runs pair every TR, and plan sees the prepared stimuli."""
    root = tmp_path / "video_fmri_dataset"
    make_cc2017(root, "subject1", train=(("seg1", 2), ("seg2", 2)), test=(("test1", 3),), n_tr=12)
    for seg in ("seg1", "seg2", "test1"):
        write_movie(root / "stimuli" / f"{seg}.mp4", 24.0, size=(32, 24))
    assert (
        main(
            [
                "data",
                "prepare",
                "cc2017",
                str(root),
                "--profile",
                "paper",
                "--set",
                "data.prepare.size=16",
                "--quiet",
            ]
        )
        == 0
    )
    assert "3 segment(s) written" in capsys.readouterr().out
    monkeypatch.setenv("MINDVIDEO_CC2017_ROOT", str(tmp_path))
    spec = write_spec(tmp_path, SUITE)
    assert main(["plan", str(spec), "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "samples of subject1: train 24, test 12 (window 2 from 2 TRs after the clip" in out


def test_release_shaped_runs_pair_the_papers_sample_counts(tmp_path):
    """18 training segments seen twice and 5 test segments seen 10 times, 240 volumes each (a
    small surface for speed): the paper profile pairs 4,320 / 1,200 samples, as the paper
    counts; dropping the windows that leave a segment would give 4,266 / 1,185."""
    from mindvideo.data.paired import PairingConfig, pairing, sample_counts

    train = tuple((f"seg{k}", 2) for k in range(1, 19))
    test = tuple((f"test{k}", 10) for k in range(1, 6))
    make_cc2017(tmp_path, "subject1", train=train, test=test, n_tr=240)
    data = load_profile("paper", {"data.root": str(tmp_path)}).data
    cfg = PairingConfig(**pairing(data, "subject1"))
    assert sample_counts(tmp_path, cfg) == {"train": 4320, "test": 1200}
    drop = cfg.model_copy(update={"window_edge": "drop"})
    assert sample_counts(tmp_path, drop) == {"train": 4266, "test": 1185}
    kept = cfg.model_copy(
        update={"preprocess": cfg.preprocess.model_copy(update={"test_repeats": "separate"})}
    )
    assert sample_counts(tmp_path, kept)["test"] == 12000  # each viewing a sample


def test_empty_model_folders_stop_the_plan(paper_env, tmp_path, monkeypatch, capsys):
    """A model folder must hold what save_pretrained writes, not only exist: an empty SD or
    judge folder is refused by `plan`, not hours later by `run`."""
    spec = write_spec(tmp_path, SUITE)
    for name, variable in (("sd", "MINDVIDEO_SD15"), ("vit", "MINDVIDEO_FRAME_JUDGE")):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(variable, str(tmp_path / name))
    assert main(["plan", str(spec), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert f"diffusion.pretrained: {tmp_path / 'sd'} has no model_index.json" in err
    assert f"eval.frame_judge: {tmp_path / 'vit'} has no config.json" in err


def test_a_missing_path_stops_before_any_work(paper_env, tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, SUITE)
    store = tmp_path / "store"
    monkeypatch.setenv("MINDVIDEO_SD15", str(tmp_path / "no-such-sd"))
    assert main(["run", str(spec), "--store", str(store), "--quiet"]) == 2
    assert f"diffusion.pretrained: {tmp_path / 'no-such-sd'} does not exist" in (
        capsys.readouterr().err
    )
    assert not (store / "cache").exists()
    # --set of the same key wins over the variable
    sd = paper_env["MINDVIDEO_SD15"]
    args = ["plan", str(spec), "--store", str(store), "--set", f"diffusion.pretrained={sd}"]
    assert main(args) == 0
    monkeypatch.delenv("MINDVIDEO_FRAME_JUDGE")
    monkeypatch.delenv("MINDVIDEO_CLIP_MODEL")
    assert main(["plan", str(spec), "--store", str(store)]) == 2
    err = capsys.readouterr().err  # every unset variable the run needs, in one error
    assert "eval.frame_judge: ${MINDVIDEO_FRAME_JUDGE} but MINDVIDEO_FRAME_JUDGE" in err
    assert "--set eval.frame_judge=PATH" in err
    assert "MINDVIDEO_CLIP_MODEL is not set" in err and "--set eval.clip_model=NAME" in err


def test_scene_cut_flags_are_optional_unless_excluding(paper_files):
    from mindvideo.stages.evaluate import ground_truth

    root = paper_files["MINDVIDEO_CC2017_ROOT"]
    dataset = Path(root) / "video_fmri_dataset"
    clips, cuts = ground_truth(dataset, ["test1_000", "test1_004"], 6)
    assert clips.shape == (2, 6, 16, 16, 3) and not cuts.any()
    with pytest.raises(DataError, match=r"test1_clips.csv: no scene_cut column"):
        ground_truth(dataset, ["test1_000"], 6, need_cuts=True)


def test_a_suite_override_gives_a_path_without_its_variable(paper_env, tmp_path, monkeypatch):
    root = paper_env["MINDVIDEO_CC2017_ROOT"]
    monkeypatch.delenv("MINDVIDEO_CC2017_ROOT")
    spec = write_spec(tmp_path, SUITE.replace("overrides:\n", f"overrides:\n  data.root: {root}\n"))
    assert main(["plan", str(spec), "--store", str(tmp_path / "store")]) == 0


def test_window_offset_follows_the_source_unless_set():
    paper = load_profile("paper")
    assert (paper.data.window_offset, paper.data.window_edge) == (2, "clamp")  # CIFTI runs
    npy = load_profile("paper", {"data.source": "mindvideo_npy"})
    assert npy.data.window_offset == 0  # as MinD-Video's code reads its arrays
    set_ = load_profile("paper", {"data.source": "mindvideo_npy", "data.window_offset": 1})
    assert set_.data.window_offset == 1
    assert load_profile("tiny").data.window_offset == 2


def _npy_suite(root) -> str:
    return SUITE.replace(
        "overrides:\n", f"overrides:\n  data.source: mindvideo_npy\n  data.root: {root}\n"
    )


def test_the_paper_plan_pairs_the_papers_counts_on_mindvideo_arrays(paper_env, tmp_path, capsys):
    """MinD-Video's arrays at the release's sizes (18 training and 5 test segments of 240 TRs,
    on the ROI's 32 voxels): as released, the plan says to convert them; converted, it pairs
    4,320 / 1,200 samples with the windows at the clip's own TR (the arrays are aligned)."""
    raw = write_layout(
        tmp_path / "npy", n_seg=18, n_test_seg=5, n_tr=240, voxels=32, size=4, flat_test=False
    )
    store = ["--store", str(tmp_path / "store")]
    assert main(["plan", str(write_spec(tmp_path, _npy_suite(raw), "raw.yaml")), *store]) == 2
    err = capsys.readouterr().err
    assert f"mvbench data prepare mindvideo-npy {raw} --out FOLDER" in err
    out = tmp_path / "converted"
    assert main(["data", "prepare", "mindvideo-npy", str(raw), "--out", str(out), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "18 training and 5 test segments, 6 frames per 2 s TR (3 fps)" in said
    assert main(["plan", str(write_spec(tmp_path, _npy_suite(out), "npy.yaml")), *store]) == 0
    assert (
        "samples of subject1: train 4,320, test 1,200 (window 2 from 0 TRs after the clip, "
        "edge clamp)" in capsys.readouterr().out
    )
    as_cifti = _npy_suite(out).replace("data.source: mindvideo_npy", "data.source: cc2017")
    assert main(["plan", str(write_spec(tmp_path, as_cifti, "cifti.yaml")), *store]) == 2
    assert "set data.source: mindvideo_npy" in capsys.readouterr().err
    on_cifti = _npy_suite(paper_env["MINDVIDEO_CC2017_ROOT"])
    assert main(["plan", str(write_spec(tmp_path, on_cifti, "on_cifti.yaml")), *store]) == 2
    assert "holds runs to preprocess" in capsys.readouterr().err


def test_prepare_mindvideo_npy_names_what_it_needs(tmp_path, capsys):
    raw = write_layout(tmp_path / "npy")
    args = ["data", "prepare", "mindvideo-npy", str(raw)]
    assert main(args) == 2
    assert "give --out FOLDER" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "o"), "--size", "64"]) == 2
    assert "--size: for cc2017 only" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "o"), "--trs-per-segment", "5"]) == 2
    assert "do not split into segments of 5 TRs" in capsys.readouterr().err
    assert main(["data", "prepare", "cc2017", str(raw), "--out", str(tmp_path / "o")]) == 2
    assert "--out: for mindvideo-npy only" in capsys.readouterr().err


def run_suite(spec: Path, store: Path):
    """`mvbench run` the one-run paper-e2e suite; its finished MLflow run."""
    from mlflow import MlflowClient

    from harness.tracking import default_uri

    assert main(["run", str(spec), "--store", str(store), "--quiet"]) == 0
    client = MlflowClient(tracking_uri=default_uri(store))
    exp = client.get_experiment_by_name("paper-e2e")
    (run,) = client.search_runs([exp.experiment_id], "tags.`mvbench.kind` = 'run'")
    assert run.info.status == "FINISHED"
    return run


def test_the_paper_pipeline_runs_is_tracked_and_reports(paper_env, tmp_path, one_torch_thread):
    spec = write_spec(tmp_path, SUITE)
    store = tmp_path / "store"
    run = run_suite(spec, store)
    m = run.data.metrics
    for key in (
        "video_2way_top1",
        "video_50way_top1",
        "frame_2way_top1",
        "ssim",
        "psnr",
        "clip_pcc_adjacent",
        "mbm.val_loss",
        "retrieval4_image_top1",  # headline at any n, as at the default 50
        "cotrain.val_loss",
        "diffusion.cond_dim",
    ):
        assert np.isfinite(m[key]), key
    # 12 test TRs, windows of 2 at offset 2, clamped at the segment's end: every TR pairs
    assert m["n_samples"] == 12
    assert m["diffusion.cond_dim"] == 768
    assert run.data.params["data.root"] == paper_env["MINDVIDEO_CC2017_ROOT"]
    # reconstructions at the stimuli's size, 6 frames per clip (3 fps)
    clips = np.load(next((store / "cache" / "decode").glob("*/clips.npy")))
    assert clips.dtype == np.uint8 and clips.shape == (12, 6, 16, 16, 3)
    out = tmp_path / "report"
    assert main(["report", str(spec), "--store", str(store), "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "full" in table and "SSIM" in table
    # the windows and sample count are stated; a published row scored on another test set
    # (MinD-Video: 1,200 samples) is listed apart with the reason, one that states none stays
    assert "fMRI windows: window 2 from 2 TRs after the clip, edge clamp; 12 test samples" in table
    assert "MinD-Video 2023 [mean of 3] (reported)" not in table
    assert "NEURONS 2025 [mean of 3] (reported)" in table
    apart = (out / "reported.md").read_text()
    assert "| MinD-Video 2023 | mean of 3 | 0.839 |" in apart
    assert "1,200 test samples, these runs scored 12" in apart
    assert "reported.md" in json.loads((out / "runs.json").read_text())["files"]


@pytest.mark.slow  # the whole paper pipeline at toy sizes, as the test above: ~15 s
def test_the_paper_pipeline_runs_on_converted_mindvideo_arrays(
    paper_env, tmp_path, one_torch_thread, capsys
):
    """MinD-Video's arrays, converted, through every stage of the paper profile: read as they
    are (their 32 columns are the ROI's voxels), windowed at offset 0, scored and reported
    beside the published rows."""
    raw = write_layout(
        tmp_path / "npy", n_seg=2, n_test_seg=1, n_tr=12, voxels=32, size=16, flat_test=False
    )
    captions = np.array([[f"a clip {s} {t}" for t in range(12)] for s in range(1)])
    np.save(raw / "text_test_256_3hz.npy", captions)
    out = tmp_path / "converted"
    assert main(["data", "prepare", "mindvideo-npy", str(raw), "--out", str(out), "--quiet"]) == 0
    spec = write_spec(tmp_path, _npy_suite(out))
    store = tmp_path / "store"
    run = run_suite(spec, store)
    assert run.data.metrics["n_samples"] == 12 and np.isfinite(run.data.metrics["ssim"])
    assert run.data.params["data.window_offset"] == "0"
    clips = np.load(next((store / "cache" / "decode").glob("*/clips.npy")))
    assert clips.shape == (12, 6, 16, 16, 3)
    report = tmp_path / "report"
    assert main(["report", str(spec), "--store", str(store), "--out", str(report)]) == 0
    table = (report / "table.md").read_text()
    assert "window 2 from 0 TRs after the clip, edge clamp; 12 test samples" in table
    # a mask that is not the arrays' ROI is refused by name, at the first stage reading the runs
    mask = np.zeros(40)
    mask[4:20] = 1  # 16 vertices, not 32
    other = tmp_path / "other_roi.npy"
    np.save(other, mask)
    wrong = _npy_suite(out).replace("overrides:\n", f"overrides:\n  data.corpus_mask: {other}\n")
    capsys.readouterr()
    args = ["run", str(write_spec(tmp_path, wrong, "wrong.yaml")), "--store", str(tmp_path / "s2")]
    assert main([*args, "--quiet", "--fail-fast"]) != 0
    said = capsys.readouterr().out  # the run's failure, summarised
    assert f"preprocessed runs have 32 voxels but the ROI mask {other} keeps 16" in said


@pytest.mark.slow  # the dry run's bench at toy sizes: ~15 s (at paper sizes: bench/README.md)
def test_the_dry_run_bench_runs_every_stage_and_tables_them(tmp_path, capsys, monkeypatch):
    """bench/paper_dry_run.py writes the folder and models it needs, runs every stage of the
    paper profile and tables each stage's time, peak memory and cost at the paper's counts."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "bench" / "paper_dry_run.py"
    loaded = importlib.util.spec_from_file_location("paper_dry_run", path)
    bench = importlib.util.module_from_spec(loaded)
    monkeypatch.setitem(sys.modules, "paper_dry_run", bench)  # as a script run sees itself
    loaded.loader.exec_module(bench)
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the bench sets the variables
    root = tmp_path / "dry"
    argv = ["--scale", "toy", "--root", str(root), "--threads", "1", "--trs", "8"]
    assert bench.main([*argv, "--set", "cotrain.batch_size=2"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split(" | ")[0][2:]: line.split(" | ")
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| stage")
    }
    assert set(rows) == {
        "foundation",
        "mbm",
        "contrastive",
        "diffusion",
        "cotrain",
        "decode",
        "evaluate",
    }
    assert float(rows["cotrain"][2]) > 0  # its peak resident memory, GiB
    assert rows["cotrain"][4] == "16 clip-epochs"  # 2 segments of 8 TRs, one epoch
    assert rows["decode"][4] == "16 clip x DDIM steps"  # 8 test clips, 2 steps
    run = bench.stage_table(root / "store")
    cotrain = next(r for r in run if r["stage"] == "cotrain")
    config = json.loads(
        next((root / "store" / "cache" / "cotrain").glob("*/manifest.json")).read_text()
    )["config"]
    assert config["batch_size"] == 2  # --set reached the stage
    assert cotrain["paper_hours"] == pytest.approx(cotrain["per_unit"] * 20 * 4320 / 3600)
