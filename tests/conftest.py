"""Shared fixtures: a smoke SynthCC dataset and a smoke suite run once per session, and CIFTI
builders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.profiles import load_profile
from mindvideo.data.cifti import SurfaceModel, brain_axis, write_dtseries
from mindvideo.data.synth.simulate import simulate
from mindvideo.models.sd15_files import SD15_INDEX, SD15_SCHEDULER

# The real CC2017 files: 59,412 cortical vertices of the 32k fs_LR meshes (medial wall out).
REAL_LEFT, REAL_RIGHT, REAL_MESH = 29696, 29716, 32492


TIERS = {"slow": pytest.mark.slow, "gpu": pytest.mark.gpu, "integration": pytest.mark.integration}


def pytest_collection_modifyitems(config, items):
    """A test's folder is its tier: tests/slow/ are `slow`, tests/gpu/ `gpu` and
    tests/integration/ `integration`, whatever their files say (tests/unit/ has no mark)."""
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(TIERS[tier])


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models on a shared 2-core machine: one torch thread avoids contention stalls."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# A two-run suite at smoke scale (ridge and random-train-clip, one subject, two seeds): seconds.
SMOKE_SUITE = """
suite: smoke-baselines
profile: smoke
seeds: [0, 1]
subjects: [subject1]
baselines: [ridge, random-train-clip]
reference: ridge
report:
  metrics: [video_2way_top1, frame_2way_top1, ssim, psnr]
  samples: 2
"""


def write_spec(folder: Path, text: str, name: str = "suite.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def seed_cache(source_store: Path, store: Path, stages=("simulate", "foundation")) -> None:
    """Copy finished upstream stages into a fresh store, so a test starts past them."""
    for stage in stages:
        src = source_store / "cache" / stage
        if src.is_dir():
            shutil.copytree(src, store / "cache" / stage, dirs_exist_ok=True)


@pytest.fixture(autouse=True, scope="session")
def _schema_cache(tmp_path_factory):
    """New stores start from an empty MLflow database kept for this test session (as they
    would from the user's cache), not from one in the home folder."""
    os.environ.setdefault("MVBENCH_SCHEMA_CACHE", str(tmp_path_factory.mktemp("schema")))


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch):
    """Tests use their own stores, never a tracking server named by the environment."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MVBENCH_STORE", raising=False)


@pytest.fixture(scope="session")
def harness_run(tmp_path_factory) -> tuple[Path, Path]:
    """(spec, store) of SMOKE_SUITE run once through `mvbench run`."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    folder = tmp_path_factory.mktemp("harness")
    spec = write_spec(folder, SMOKE_SUITE)
    store = folder / "store"
    run_suite(spec, store)
    return spec, store


def run_suite(spec: Path, store: Path, *options: str) -> None:
    """`mvbench run SPEC --store STORE [OPTIONS]` in process, with one torch thread (small
    models on a shared 2-core machine), asserting it succeeds."""
    import torch

    from harness.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", str(spec), "--store", str(store), "--quiet", *options]) == 0
    finally:
        torch.set_num_threads(threads)


# measurements of the machine (wall clock, peak memory: harness/memory.py), not results
TIMINGS = ("seconds", "per_second", "_share", "peak_rss_gib", "peak_cuda_gib")


def tracked_runs(store: Path, experiment: str):
    """(an MLflow client on the store, {variant: its MLflow run}) of a suite's runs."""
    from mlflow import MlflowClient

    from harness.tracking import default_uri

    client = MlflowClient(tracking_uri=default_uri(store))
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], "tags.`mvbench.kind` = 'run'")
    return client, {r.data.tags["mvbench.variant"]: r for r in found}


def run_results(store: Path, experiment: str) -> dict[str, dict]:
    """{variant: (the run's tags, its metrics less the timings and memory peaks)} of a suite's
    runs in a store."""
    return {
        variant: (
            r.data.tags,
            {k: v for k, v in r.data.metrics.items() if not any(t in k for t in TIMINGS)},
        )
        for variant, r in tracked_runs(store, experiment)[1].items()
    }


def assert_same_numbers(a: dict[str, float], b: dict[str, float], where: str) -> None:
    assert a.keys() == b.keys(), where
    differ = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert not differ, f"{where}: the same spec gave different numbers: {differ}"


@pytest.fixture(scope="session")
def smoke_profile():
    return load_profile("smoke")


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory, smoke_profile) -> Path:
    out = tmp_path_factory.mktemp("smoke") / "synthcc"
    simulate(smoke_profile.data.synth, out, extra={"profile": "smoke"})
    return out


def small_axis(n_left: int = 20, n_right: int = 20, n_sub: int = 4):
    return brain_axis(
        [
            SurfaceModel("CORTEX_LEFT", n_left + 5, np.arange(n_left)),
            SurfaceModel("CORTEX_RIGHT", n_right + 5, np.arange(n_right)),
        ],
        n_sub,
    )


def write_run(path: Path, data: np.ndarray, tr: float = 2.0, axis=None) -> Path:
    """Write a (T, grayordinates) dtseries; the default axis has 40 cortical + 4 volume."""
    write_dtseries(path, data, tr, axis if axis is not None else small_axis())
    return path


def cc2017_run_path(root: Path, subject: str, segment: str, repeat: int) -> Path:
    return root / subject / "fmri" / segment / "cifti" / f"{segment}_{repeat}_Atlas.dtseries.nii"


def make_cc2017(
    root: Path,
    subject: str = "subject1",
    train=(("seg1", 2), ("seg2", 2)),
    test=(("test1", 3),),
    n_tr: int = 12,
    seed: int = 0,
) -> Path:
    """A small CC2017-layout dataset: a shared signal per segment plus noise per repeat."""
    rng = np.random.default_rng(seed)
    axis = small_axis()
    n = 44
    for seg, reps in (*train, *test):
        signal = rng.standard_normal((n_tr, n))
        for r in range(1, reps + 1):
            data = 100 + signal + 0.5 * rng.standard_normal((n_tr, n))
            write_run(cc2017_run_path(root, subject, seg, r), data, axis=axis)
    return root


def toy_image_unet(cond_dim: int = 12, seed: int = 0):
    """A 2-level UNet2DConditionModel of a few thousand weights over 4-channel latents."""
    import torch

    from mindvideo.models.diffusion import build_unet
    from mindvideo.models.diffusion_config import UNetConfig

    torch.manual_seed(seed)
    cfg = UNetConfig(
        block_out_channels=(8, 16),
        cross_attention_levels=(True, False),
        attention_head_dim=4,
        norm_num_groups=4,
    )
    return build_unet(cfg, 4, cond_dim, 8).eval()


def toy_video_pipeline(cond_dim: int = 12, frame_attention: str = "prev2"):
    """MindVideoPipeline over a toy VAE (16 px) and the toy UNet inflated, with temporal layers
    that do something (their zero-initialised output projections perturbed)."""
    import torch

    from mindvideo.models import diffusion as D
    from mindvideo.models.diffusion_config import DiffusionConfig, VAEConfig
    from mindvideo.models.inflated_unet import InflatedUNet
    from mindvideo.models.pipeline import MindVideoPipeline

    torch.manual_seed(0)
    vae = D.build_vae(VAEConfig(block_out_channels=(8, 8), norm_num_groups=4), 16).eval()
    inflated = InflatedUNet(toy_image_unet(cond_dim), frame_attention, temporal_heads=2)
    with torch.no_grad():
        for p in inflated.temporal_parameters():
            p.add_(0.02 * torch.randn_like(p))
    return MindVideoPipeline.with_ddim(vae, inflated, D.build_scheduler(DiffusionConfig()).config)


# ---------------------------------------------------------------------------------------------
# Real-format files of the paper path (tiny sizes): judges, CLIP, SD 1.5, stimuli, HCP corpus

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

# A tiny open_clip architecture registered under a name, standing in for ViT-L-14 & co.
TINY_CLIP_ARCH = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


# The transformer size of the tiny judges the tests save (ViT and VideoMAE configs).
TINY_TRANSFORMER = dict(
    patch_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
)


def tiny_vit_judge(folder: Path, labels: int = 1000, size: int = 32, preprocessor=None) -> Path:
    """A ViTForImageClassification saved with save_pretrained (the frame judge's format)."""
    import json

    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=size, num_labels=labels, **TINY_TRANSFORMER)
    ViTForImageClassification(cfg).save_pretrained(folder)
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


def tiny_videomae_judge(folder: Path, labels: int = 400, size: int = 32, frames: int = 4) -> Path:
    """A VideoMAEForVideoClassification saved with save_pretrained and an ImageNet-normalising
    preprocessor_config.json (the video judge's format)."""
    import json

    import torch
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    torch.manual_seed(0)
    cfg = VideoMAEConfig(
        image_size=size, num_frames=frames, tubelet_size=2, num_labels=labels, **TINY_TRANSFORMER
    )
    VideoMAEForVideoClassification(cfg).save_pretrained(folder)
    pre = {"image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "do_normalize": True}
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    return folder


def tiny_open_clip_checkpoint(path: Path, name: str, arch_folder: Path) -> Path:
    """Register TINY_CLIP_ARCH as open_clip model `name` and save its state dict to `path`, as
    an open_clip checkpoint file (open_clip_pytorch_model.bin and the like) is."""
    import json

    import open_clip
    import torch

    arch_folder.mkdir(parents=True, exist_ok=True)
    (arch_folder / f"{name}.json").write_text(json.dumps(TINY_CLIP_ARCH))
    open_clip.add_model_config(arch_folder)
    torch.manual_seed(0)
    torch.save(open_clip.create_model(name).state_dict(), path)
    return path


def write_sd_folder(folder: Path, cond_dim: int = 24, image_size: int = 16):
    """A tiny Stable Diffusion folder in SD 1.5's diffusers layout (model_index.json, vae/ and
    unet/ written with save_pretrained, SD 1.5's PNDM scheduler config); returns the model."""
    import json

    import torch

    from mindvideo.models import diffusion as D
    from mindvideo.models.diffusion_config import DiffusionConfig, UNetConfig, VAEConfig

    torch.manual_seed(0)
    vae = D.build_vae(VAEConfig(block_out_channels=(8, 8), norm_num_groups=4), image_size)
    unet = D.build_unet(
        UNetConfig(
            block_out_channels=(8, 16),
            cross_attention_levels=(True, False),
            attention_head_dim=4,
            norm_num_groups=4,
        ),
        4,
        cond_dim,
        image_size // 2,
    )
    model = D.ImageDiffusion(vae, unet, D.build_scheduler(DiffusionConfig()))
    model.vae.save_pretrained(folder / "vae")
    model.unet.save_pretrained(folder / "unet")
    (folder / "scheduler").mkdir(parents=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER))
    (folder / "model_index.json").write_text(json.dumps(SD15_INDEX))
    return model


CAPTIONS = ("a red ball rolls on grass", "a man walks along a beach", "birds fly over a lake")


def write_stimuli(
    root: Path, segments: dict[str, int], size: int = 16, scene_trs: int = 3, seed: int = 0
) -> Path:
    """Stimuli as the pipeline reads real CC2017 movies once converted: stimuli/<segment>.npy,
    uint8 (frames, H, W, 3) at 3 fps (6 frames per 2 s TR), and <segment>_clips.csv with one
    caption per clip (TR), a new scene every `scene_trs` TRs. `segments`: name -> TRs."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    folder = root / "stimuli"
    folder.mkdir(parents=True, exist_ok=True)
    for s, (segment, n_tr) in enumerate(segments.items()):
        scene = (np.arange(n_tr) // scene_trs + s) % len(CAPTIONS)
        colours = rng.integers(0, 256, (len(CAPTIONS), 3))
        frames = np.repeat(colours[scene], 6, axis=0)[:, None, None, :]  # (n_tr * 6, 1, 1, 3)
        noise = rng.integers(-20, 21, (n_tr * 6, size, size, 3))
        np.save(folder / f"{segment}.npy", np.clip(frames + noise, 0, 255).astype(np.uint8))
        pd.DataFrame({"caption": [CAPTIONS[k] for k in scene]}).to_csv(
            folder / f"{segment}_clips.csv", index=False
        )
    return root


def hcp_run_path(root: Path, subject: str, run: str = "rfMRI_REST1_LR") -> Path:
    return root / subject / "MNINonLinear" / "Results" / run / f"{run}_Atlas_MSMAll.dtseries.nii"


def make_hcp_corpus(root: Path, subjects: int = 3, n_tr: int = 40, seed: int = 0) -> Path:
    """An HCP-style corpus on small_axis(): one resting run per subject (HCP's numeric subject
    names); its ROI mask is written apart."""
    rng = np.random.default_rng(seed)
    for i in range(subjects):
        data = 100 + rng.standard_normal((n_tr, 44))
        write_run(hcp_run_path(root, f"{100307 + i}"), data)
    return root


def write_layout(
    root, n_seg=3, n_tr=4, voxels=20, frames=6, size=8, text=True, n_test_seg=None, flat_test=True
):
    """MinD-Video's preprocessed .npy layout for subject1: fMRI, 3 Hz video, captions (train
    only). The test fMRI is flat (samples, voxels) unless `flat_test` is False."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n_test_seg = n_seg if n_test_seg is None else n_test_seg
    rng = np.random.default_rng(0)
    np.save(root / "fmri_train_subject1.npy", rng.standard_normal((n_seg, n_tr, voxels)))
    test = rng.standard_normal((n_test_seg, n_tr, voxels))
    np.save(root / "fmri_test_subject1.npy", test.reshape(-1, voxels) if flat_test else test)
    for split, n in (("train", n_seg), ("test", n_test_seg)):
        shape = (n, n_tr, frames, size, size, 3)
        np.save(root / f"video_{split}_256_3hz.npy", rng.integers(0, 255, shape, dtype=np.uint8))
    if text:
        caps = np.array([[f"clip {s} {t}" for t in range(n_tr)] for s in range(n_seg)])
        np.save(root / "text_train_256_3hz.npy", caps)
    return root


MOVIE_FPS = 30
# three scenes of one colour each (with a square moving inside), cut at 3.0 s and 7.0 s
MOVIE_SCENES = [(0.0, (200, 30, 30)), (3.0, (30, 200, 30)), (7.0, (30, 30, 200))]


def write_movie(path: Path, seconds: float, size=(48, 32)) -> None:
    """A PyAV-written h264 movie at MOVIE_FPS: MOVIE_SCENES' colours, a white square moving."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=MOVIE_FPS)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for j in range(round(seconds * MOVIE_FPS)):
            t = j / MOVIE_FPS
            colour = [c for start, c in MOVIE_SCENES if t >= start][-1]
            img = np.empty((size[1], size[0], 3), np.uint8)
            img[:] = colour
            x = j % (size[0] - 8)
            img[10:18, x : x + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
