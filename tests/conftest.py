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

# The real CC2017 files: 59,412 cortical vertices of the 32k fs_LR meshes (medial wall out).
REAL_LEFT, REAL_RIGHT, REAL_MESH = 29696, 29716, 32492


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models on a shared 2-core machine: one torch thread avoids contention stalls."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# A two-run suite at smoke scale (ridge and chance, one subject, two seeds): seconds to run.
SMOKE_SUITE = """
suite: smoke-baselines
profile: smoke
seeds: [0, 1]
subjects: [subject1]
baselines: [ridge, chance]
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


def run_suite(spec: Path, store: Path) -> None:
    """`mvbench run SPEC --store STORE` in process, with one torch thread (small models on a
    shared 2-core machine), asserting it succeeds."""
    import torch

    from harness.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", str(spec), "--store", str(store), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)


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
