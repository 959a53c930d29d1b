"""What needs a CUDA device (`pytest -m gpu` on a GPU machine): the generator's numerics on the
GPU against the CPU's, bf16 autocast, seeded decoding, and the whole pipeline through
`mvbench run` on CUDA, run twice into two stores to the same numbers up to the GPU's rounding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import toy_video_pipeline

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

COND_DIM = 12


@pytest.fixture
def exact_float32():
    """float32 without TF32 (cuDNN convolutions use it by default), so CPU and GPU agree to
    rounding."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


def conditions(batch: int = 2):
    g = torch.Generator().manual_seed(5)
    return torch.randn(batch, 3, COND_DIM, generator=g), torch.randn(1, 3, COND_DIM, generator=g)


def generate(pipe, seed: int = 0, **kw):
    cond, neg = conditions()
    args = {"frames": 4, "num_inference_steps": 4, "guidance_scale": 7.5} | kw
    return pipe(cond, neg, generator=torch.Generator().manual_seed(seed), **args)


@pytest.mark.parametrize("frame_attention", ["prev2", "first_prev", "full", "none"])
def test_inflated_unet_on_cuda_equals_the_cpu(frame_attention, exact_float32):
    unet = toy_video_pipeline(COND_DIM, frame_attention).unet
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 5, 8, 8, generator=g)  # (batch, channels, frames, h, w)
    cond = torch.randn(2, 3, COND_DIM, generator=g)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        cpu = unet(x, t, cond)
        gpu = unet.to("cuda")(x.cuda(), t.cuda(), cond.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)


def test_float32_decoding_on_cuda_equals_the_cpu_and_batched_guidance_two_calls(exact_float32):
    pipe = toy_video_pipeline(COND_DIM)
    cpu = generate(pipe, output_type="latent")
    pipe.to("cuda")
    batched = generate(pipe, output_type="latent", autocast_dtype=None).cpu()
    separate = generate(pipe, output_type="latent", autocast_dtype=None, batched_guidance=False)
    # (GPU kernels differ with the batch size: rounding, not the 1e-5 of the CPU test)
    torch.testing.assert_close(batched, separate.cpu(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batched, cpu, atol=1e-4, rtol=1e-4)


def test_bf16_decoding_is_seeded_and_close_to_float32():
    pipe = toy_video_pipeline(COND_DIM).to("cuda")
    full = generate(pipe, output_type="latent", autocast_dtype=None).cpu()
    bf16 = generate(pipe, output_type="latent").cpu()  # the default: bf16 autocast
    assert torch.equal(bf16, generate(pipe, output_type="latent").cpu())  # same seed, same clip
    assert not torch.equal(bf16, generate(pipe, seed=1, output_type="latent").cpu())
    # bf16 keeps 8 bits of mantissa: close to float32, not equal
    assert not torch.equal(bf16, full)
    assert (bf16 - full).abs().max() < 0.1 * full.abs().max()
    clips = generate(pipe, frames=3)
    assert clips.dtype == np.uint8 and clips.shape == (2, 3, 16, 16, 3)


SUITE = """
suite: gpu
profile: smoke
seeds: [0]
subjects: [subject1]
variants: {full: {}}
reference: full
report: {metrics: [video_2way_top1, ssim, cotrain.val_loss], samples: 2}
"""


def assert_within_noise(a: dict[str, float], b: dict[str, float]) -> None:
    """GPU kernels are not bitwise repeatable (atomic adds in reductions, the flash and
    memory-efficient attention backward passes): between two runs of one spec every number must
    agree to a fifth of its standard error over the test clips, or to 1e-4 relative where it has
    none. (Measured on an H200: contrastive, align and co-training losses differ by 1e-7 to 1e-6
    relative, the N-way accuracies by up to a seventeenth of their standard error. torch's
    deterministic mode fixes contrastive and align but not co-training's attention.)"""
    assert a.keys() == b.keys()
    for key, value in a.items():
        if key.endswith(("_se", "_ci_low", "_ci_high")):
            continue
        se = a.get(f"{key}_se")
        tolerance = se / 5 if se else 1e-4 * max(1.0, abs(value))
        assert abs(value - b[key]) <= tolerance, (key, value, b[key], tolerance)


def test_the_whole_pipeline_runs_on_cuda_and_repeats_within_noise(tmp_path):
    """Every stage (MBM, contrastive, the foundation models, co-training under bf16 autocast,
    decoding, scoring) on the GPU, twice from empty stores: the runs say where they were
    computed, and the same spec gives the same numbers up to the GPU's rounding."""
    from conftest import run_results, run_suite, write_spec

    spec = write_spec(tmp_path, SUITE)
    results = []
    for store in (tmp_path / "a", tmp_path / "b"):
        run_suite(spec, store, "--device", "cuda")
        for manifest in (store / "cache").glob("*/*/manifest.json"):
            assert json.loads(manifest.read_text())["device"] == "cuda", manifest
        tags, metrics = run_results(store, "gpu")["full"]
        assert tags["mvbench.devices"] == "cuda"
        for key in ("video_2way_top1", "ssim", "cotrain.val_loss", "mbm.val_loss"):
            assert np.isfinite(metrics[key]), key
        results.append(metrics)
    assert_within_noise(*results)
