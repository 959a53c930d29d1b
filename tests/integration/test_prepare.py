"""`mvbench data prepare cc2017`: a release-shaped folder the test writes itself (mp4 movies
written with PyAV, CIFTI runs at the real grayordinate count, a tiny BLIP captioner saved with
save_pretrained) becomes what the loaders, `inspect` and `plan` read; bad input is refused by
name and nothing already prepared is lost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    MOVIE_SCENES,
    REAL_LEFT,
    REAL_MESH,
    REAL_RIGHT,
    cc2017_run_path,
    write_movie,
    write_run,
)

from harness.cli import main
from mindvideo.data.cc2017 import open_stimuli
from mindvideo.data.cifti import SurfaceModel, brain_axis
from mindvideo.data.prepare import PrepareConfig, prepare_cc2017

N_TR, TR = 6, 2.0
SCENES = MOVIE_SCENES

pytestmark = pytest.mark.slow  # movies, 91,282-grayordinate runs and a captioner: ~80 s


def real_axis():
    rng = np.random.default_rng(0)
    return brain_axis(
        [
            SurfaceModel(
                "CORTEX_LEFT", REAL_MESH, np.sort(rng.choice(REAL_MESH, REAL_LEFT, False))
            ),
            SurfaceModel(
                "CORTEX_RIGHT", REAL_MESH, np.sort(rng.choice(REAL_MESH, REAL_RIGHT, False))
            ),
        ],
        n_subcortical=91282 - REAL_LEFT - REAL_RIGHT,
    )


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """video_fmri_dataset/ as released: runs of 6 volumes at 91,282 grayordinates, movies."""
    root = tmp_path_factory.mktemp("release") / "video_fmri_dataset"
    axis = real_axis()
    rng = np.random.default_rng(1)
    for seg, reps in (("seg1", 2), ("seg2", 2), ("test1", 2)):
        for r in range(1, reps + 1):
            data = rng.standard_normal((N_TR, 91282)).astype(np.float32)
            write_run(cc2017_run_path(root, "subject1", seg, r), data, axis=axis)
        write_movie(root / "stimuli" / f"{seg}.mp4", N_TR * TR + 0.5)  # a little left over
    return root


def tiny_captioner(folder: Path) -> Path:
    """A BLIP captioning model of a few thousand weights with its processor."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder.mkdir(parents=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "red", "green"]
    words += ["blue", "scene", "square", "moving", "of", "the", "screen"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    text = dict(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, intermediate_size=64)
    text |= dict(num_attention_heads=2, bos_token_id=5, sep_token_id=3, pad_token_id=0)
    vision = dict(hidden_size=32, image_size=32, patch_size=16, num_hidden_layers=1)
    vision |= dict(num_attention_heads=2, intermediate_size=64)
    import torch

    torch.manual_seed(0)
    model = BlipForConditionalGeneration(
        BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_prepare_writes_what_the_loaders_read(release, tmp_path, capsys):
    argv = ["data", "prepare", "cc2017", str(release), "--size", "16", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 segment(s) written, 0 already prepared, 0 captioned" in out
    assert "no captions written: give --captioner FOLDER" in out
    stimuli = open_stimuli(release)
    assert (stimuli.fps, stimuli.frames_per_tr) == (3.0, 6)
    frames = stimuli.frames("seg1")
    assert frames.shape == (N_TR * 6, 16, 16, 3)
    # the frame shown at k / 3 s: red until 3 s, green until 7 s, then blue (a corner pixel)
    corner = frames[:, 1, 1].astype(int)
    for k in (0, 8, 9, 20, 21, 35):
        t = k / 3
        expected = np.array([c for start, c in SCENES if t >= start][-1])
        assert np.abs(corner[k] - expected).max() < 40, (k, corner[k], expected)
    clips = pd.read_csv(release / "stimuli" / "seg1_clips.csv")
    assert clips["scene_cut"].tolist() == [False, True, False, True, False, False]
    assert clips["scene"].tolist() == [0, 0, 1, 1, 2, 2]
    assert "caption" not in clips
    # stimuli check against the runs, as the pipeline's loaders do
    stimuli.check_length("seg1", N_TR)
    # a second call does nothing
    assert main(argv) == 0
    assert "0 segment(s) written, 3 already prepared" in capsys.readouterr().out


def test_captions_are_added_later_and_inspect_reads_the_result(release, tmp_path, capsys):
    captioner = tiny_captioner(tmp_path / "blip")
    argv = ["data", "prepare", "cc2017", str(release), "--size", "16", "--quiet"]
    assert main([*argv, "--captioner", str(captioner)]) == 0
    out = capsys.readouterr().out
    assert "0 segment(s) written, 0 already prepared, 3 captioned" in out
    clips = pd.read_csv(release / "stimuli" / "test1_clips.csv", keep_default_na=False)
    assert len(clips) == N_TR and clips["caption"].map(type).eq(str).all()
    before = clips["caption"].tolist()
    assert main([*argv, "--captioner", str(captioner)]) == 0  # done: nothing again
    assert "0 captioned" in capsys.readouterr().out
    again = pd.read_csv(release / "stimuli" / "test1_clips.csv", keep_default_na=False)
    assert again["caption"].tolist() == before
    assert main(["data", "inspect", str(release), "--no-validate", "--quiet"]) == 0
    assert "stimuli: 3 fps, 6 frames per TR" in capsys.readouterr().out


def test_bad_input_is_named_and_nothing_prepared_is_lost(release, tmp_path, capsys):
    import shutil

    copy = tmp_path / "video_fmri_dataset"
    shutil.copytree(release, copy)
    kept = (copy / "stimuli" / "seg1.npy").read_bytes()
    # a movie shorter than its runs
    write_movie(copy / "stimuli" / "seg2.mp4", 5.0)
    code = main(["data", "prepare", "cc2017", str(copy), "--size", "16", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "seg2.mp4: the movie gives" in err and "its fMRI runs need 36" in err
    assert (copy / "stimuli" / "seg1.npy").read_bytes() == kept
    assert not list((copy / "stimuli").glob(".*.tmp"))
    # a corrupt mp4
    (copy / "stimuli" / "seg2.mp4").write_bytes(b"not a movie")
    assert main(["data", "prepare", "cc2017", str(copy), "--size", "16", "--quiet"]) == 2
    assert "seg2.mp4: cannot decode" in capsys.readouterr().err
    write_movie(copy / "stimuli" / "seg2.mp4", N_TR * TR)
    # a captioner folder that is not one
    (tmp_path / "notblip").mkdir()
    argv = ["data", "prepare", "cc2017", str(copy), "--captioner", str(tmp_path / "notblip")]
    assert main(argv) == 2
    assert "notblip: no config.json" in capsys.readouterr().err
    (tmp_path / "notblip" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert main(argv) == 2
    assert "model_type 'bert'" in capsys.readouterr().err
    # other settings than the stimuli were prepared at
    argv = ["data", "prepare", "cc2017", str(copy), "--size", "16", "--fps", "6", "--quiet"]
    assert main(argv) == 2
    assert "stimuli.json: the stimuli were prepared at" in capsys.readouterr().err
    # a run with another grayordinate count than the others
    odd = np.zeros((N_TR, 44), np.float32)
    write_run(cc2017_run_path(copy, "subject1", "seg2", 2), odd)
    assert main(["data", "prepare", "cc2017", str(copy), "--size", "16", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "seg2_2_Atlas.dtseries.nii" in err


def test_fps_must_give_whole_frames_per_tr(release):
    with pytest.raises(Exception, match="whole frames per TR"):
        prepare_cc2017(release, PrepareConfig(fps=2.2))
