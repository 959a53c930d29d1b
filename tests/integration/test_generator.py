"""The video generator: MindVideoPipeline (batched adversarial guidance, seeds, frame counts,
schedulers), the negative conditions, which parameters co-train, and the whole MinD-Video
pipeline end to end at smoke scale through `mvbench run`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import toy_video_pipeline, tracked_runs

from mindvideo.errors import ConfigError
from mindvideo.models import diffusion as D
from mindvideo.models.diffusion_config import DiffusionConfig, VAEConfig
from mindvideo.models.pipeline import MindVideoPipeline, make_scheduler
from mindvideo.train.video_diffusion import trainable_unet_parameters

COND_DIM = 12


def toy_pipeline(frame_attention: str = "prev2") -> MindVideoPipeline:
    return toy_video_pipeline(COND_DIM, frame_attention)


def conditions(batch: int = 2):
    g = torch.Generator().manual_seed(5)
    return torch.randn(batch, 3, COND_DIM, generator=g), torch.randn(1, 3, COND_DIM, generator=g)


def generate(pipe, seed=0, **kw):
    cond, neg = conditions()
    args = {"frames": 4, "num_inference_steps": 3, "guidance_scale": 7.5} | kw
    return pipe(cond, neg, generator=torch.Generator().manual_seed(seed), **args)


def test_batched_guidance_equals_two_calls_and_calls_the_unet_once_per_step():
    pipe = toy_pipeline()
    calls = []
    forward = pipe.unet.forward
    pipe.unet.forward = lambda *a, **k: calls.append(len(a[0])) or forward(*a, **k)
    batched = generate(pipe, output_type="latent")
    assert calls == [4, 4, 4]  # one call per step, condition and negative stacked (2 x 2)
    calls.clear()
    separate = generate(pipe, output_type="latent", batched_guidance=False)
    assert calls == [2] * 6
    # equal up to float32 summation order, which a batch of 4 and one of 2 may take differently
    # (seen: 1.05e-5 with one thread)
    torch.testing.assert_close(batched, separate, atol=5e-5, rtol=1e-5)
    calls.clear()
    generate(pipe, guidance_scale=1.0, output_type="latent")
    assert calls == [2, 2, 2]  # no guidance: the condition alone


def test_guidance_formula():
    pipe = toy_pipeline()
    x = torch.randn(1, 4, 2, 4, 4)
    cond, neg = conditions(1)
    t = torch.tensor(500)
    with torch.no_grad():
        eps = pipe._eps(x, t, cond, neg, 3.0, batched=True)
        e_c, e_n = pipe.unet(x, t, cond), pipe.unet(x, t, neg)
    torch.testing.assert_close(eps, e_n + 3.0 * (e_c - e_n), atol=1e-5, rtol=1e-5)


def test_autoencoder_round_trip_works_at_the_autoencoder_resolution():
    torch.manual_seed(0)
    vae = D.build_vae(VAEConfig(block_out_channels=(8, 8), norm_num_groups=4), 16).eval()
    clips = np.random.default_rng(0).integers(0, 256, (3, 2, 24, 24, 3), dtype=np.uint8)
    out = D.round_trip(vae, clips)
    assert out.dtype == np.uint8 and out.shape == (3, 2, 16, 16, 3)  # sample_size 16
    # frame order is kept: each output frame is the round trip of its own input frame
    single = D.round_trip(vae, clips[1:2, 1:2])
    assert np.abs(out[1, 1].astype(int) - single[0, 0]).max() <= 1


def test_seeded_any_frame_count_and_uint8_clips():
    pipe = toy_pipeline()
    a, b, c = generate(pipe, 0), generate(pipe, 0), generate(pipe, 1)
    assert a.dtype == np.uint8 and a.shape == (2, 4, 16, 16, 3)  # (batch, frames, H, W, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert generate(pipe, frames=12).shape == (2, 12, 16, 16, 3)  # 6 fps over 2 s
    assert generate(pipe, frames=1).shape[1] == 1
    with pytest.raises(ConfigError, match="at least 1 frame"):
        generate(pipe, frames=0)


def test_a_share_of_the_initial_noise_common_to_all_frames():
    pipe = toy_pipeline()
    first = []
    forward = pipe.unet.forward
    pipe.unet.forward = lambda *a, **k: first.append(a[0][:2].clone()) or forward(*a, **k)

    def initial(**kw):  # the first step's latents (DDIM does not scale them)
        first.clear()
        generate(pipe, output_type="latent", num_inference_steps=1, frames=6, **kw)
        return first[0].transpose(1, 2).flatten(2)  # (batch, frames, values)

    independent = initial()
    assert torch.equal(initial(noise_share=0.0), independent)  # the default draws, unchanged
    same = initial(noise_share=1.0)
    assert torch.equal(same, same[:, :1].expand_as(same))  # one noise for every frame
    half = initial(noise_share=0.5)
    corr = torch.corrcoef(half[0])[~torch.eye(6, dtype=torch.bool)]
    assert 0.3 < corr.mean() < 0.7 and abs(half.std() - independent.std()) < 0.1  # variance kept
    with pytest.raises(ConfigError, match="noise_share"):
        initial(noise_share=1.5)


def test_an_autoencoder_in_half_precision_decodes():
    """Latents stay float32 through the denoising loop; the VAE gets them in its own dtype."""
    pipe = toy_pipeline()
    pipe.vae.to(torch.bfloat16)
    clips = generate(pipe, frames=2)
    assert clips.dtype == np.uint8 and clips.shape == (2, 2, 16, 16, 3)


def test_scheduler_by_name():
    config = D.build_scheduler(DiffusionConfig()).config
    assert type(make_scheduler("DPMSolverMultistepScheduler", config)).__name__ == (
        "DPMSolverMultistepScheduler"
    )
    pipe = toy_pipeline()
    pipe.scheduler = make_scheduler("EulerDiscreteScheduler", config)
    assert generate(pipe).shape == (2, 4, 16, 16, 3)
    with pytest.raises(ConfigError, match="not a diffusers scheduler"):
        make_scheduler("FastScheduler", config)
    with pytest.raises(ConfigError, match="not a diffusers scheduler"):
        make_scheduler("AutoencoderKL", config)


def test_attention_training_selects_attention_and_temporal_layers_only():
    unet = toy_pipeline().unet
    names = {id(p): n for n, p in unet.named_parameters()}
    chosen = [names[id(p)] for p in trainable_unet_parameters(unet, "attention")]
    assert chosen and all(".attn1." in n or ".attn2." in n or ".temporal." in n for n in chosen)
    assert any(".temporal." in n for n in chosen) and any(".attn2." in n for n in chosen)
    assert len(trainable_unet_parameters(unet, "all")) == len(names)
    assert trainable_unet_parameters(unet, "none") == []


def test_negative_conditions():
    from mindvideo.stages.decode import negative_condition

    class Mean(torch.nn.Module):  # a stand-in encoder: the window's mean, as 2 tokens
        def forward(self, x):
            return x.mean(dim=1, keepdim=True).repeat(1, 2, 1)

    rng = np.random.default_rng(0)
    train = rng.normal(size=(10, 2, 5)).astype(np.float32)
    test = rng.normal(size=(6, 2, 5)).astype(np.float32)
    enc = Mean()
    neg = negative_condition(enc, "test_mean", train, test, "cpu")
    assert neg.shape == (1, 2, 5)
    np.testing.assert_allclose(neg[0, 0].numpy(), test.mean(axis=(0, 1)), rtol=1e-5)
    neg = negative_condition(enc, "train_mean", train, test, "cpu")
    np.testing.assert_allclose(neg[0, 1].numpy(), train.mean(axis=(0, 1)), rtol=1e-5)
    assert not negative_condition(enc, "zeros", train, test, "cpu").any()


def test_the_unconditional_branch_is_a_choice_and_the_negative_follows_it():
    from mindvideo.models.uncond import conditions, fill_window
    from mindvideo.stages.decode import negative_condition

    class Shifted(torch.nn.Module):  # the window's mean plus 1, as 2 tokens: zeros map to ones
        def forward(self, x):
            return x.mean(dim=1, keepdim=True).repeat(1, 2, 1) + 1.0

    rng = np.random.default_rng(1)
    train = rng.normal(0.5, 1.0, size=(10, 2, 5)).astype(np.float32)
    test = rng.normal(size=(6, 2, 5)).astype(np.float32)
    enc, x = Shifted(), torch.from_numpy(test[:4])
    keep = torch.tensor([1.0, 0.0, 1.0, 0.0])
    mean = train.mean(axis=(0, 1))
    expected_dropped = {"zero_embedding": 0.0, "zero_fmri": 1.0, "mean_fmri": mean + 1.0}
    for uncond, dropped in expected_dropped.items():
        fill = fill_window(uncond, train)
        cond = conditions(enc, x, keep, None if fill is None else torch.from_numpy(fill))
        np.testing.assert_allclose(cond[0].numpy(), enc(x[:1])[0].numpy(), rtol=1e-6)
        np.testing.assert_allclose(cond[1].numpy(), np.broadcast_to(dropped, (2, 5)), rtol=1e-5)
        # plain guidance (negative zeros) pushes away from the branch the model learnt
        neg = negative_condition(enc, "zeros", train, test, "cpu", uncond)
        np.testing.assert_allclose(neg[0].numpy(), cond[1].numpy(), rtol=1e-5)
        # the adversarial negative does not depend on the choice
        adv = negative_condition(enc, "test_mean", train, test, "cpu", uncond)
        np.testing.assert_allclose(adv[0, 0].numpy(), test.mean(axis=(0, 1)) + 1, rtol=1e-5)


def test_decoding_reads_the_cotraining_unconditional_branch(smoke_profile):
    from harness.plan import stage_config

    profile = smoke_profile.model_copy(
        update={"cotrain": smoke_profile.cotrain.model_copy(update={"uncond": "mean_fmri"})}
    )
    assert stage_config("decode", profile, "subject1").uncond == "mean_fmri"
    assert stage_config("cotrain", profile, "subject1").uncond == "mean_fmri"
    frozen = profile.model_copy(
        update={"cotrain": profile.cotrain.model_copy(update={"enabled": False})}
    )
    # without co-training the UNet is the diffusion stage's, trained with zero embeddings
    assert stage_config("decode", frozen, "subject1").uncond == "zero_embedding"


@pytest.fixture(scope="module")
def generator_store(tmp_path_factory, harness_run):
    """The MinD-Video pipeline (full, no co-training) at smoke scale through `mvbench run`."""
    from conftest import run_suite, seed_cache, write_spec

    folder = tmp_path_factory.mktemp("generator")
    spec = write_spec(
        folder,
        """
suite: gen
profile: smoke
seeds: [0]
subjects: [subject1]
variants: {full: {}, no-cotrain: {cotrain.enabled: false}, captions: {decode.condition: caption}}
baselines: [autoencoder]
reference: full
report: {metrics: [video_2way_top1, ssim, cotrain.val_loss], samples: 2}
""",
    )
    store = folder / "store"
    seed_cache(harness_run[1], store)
    run_suite(spec, store)
    return spec, store


@pytest.mark.slow  # the smoke pipeline of 4 variants (45 s); tests/integration/
# test_paper_profile.py runs MinD-Video end to end through mvbench in the default run
def test_whole_pipeline_runs_is_tracked_and_reports(generator_store, capsys):
    from harness.cli import main

    spec, store = generator_store
    client, runs = tracked_runs(store, "gen")
    assert set(runs) == {"full", "no-cotrain", "captions", "autoencoder"}
    # the autoencoder round trip of the true frames: the pixel ceiling of the generator
    ceiling = runs["autoencoder"].data.metrics
    assert ceiling["ssim"] > runs["full"].data.metrics["ssim"]  # (smoke's VAE is barely trained)
    # the ceiling row decodes the captions through the same trained models
    assert np.isfinite(runs["captions"].data.metrics["frame_2way_top1"])
    full = runs["full"].data.metrics
    assert runs["captions"].data.metrics["cotrain.val_loss"] == full["cotrain.val_loss"]
    for key in ("video_2way_top1", "ssim", "cotrain.val_loss", "diffusion.vae_psnr"):
        assert np.isfinite(full[key]), key
    # the condition adapter was fitted once and serves both variants
    assert np.isfinite(full["align.test_r2"]) and full["align.alpha"] > 0
    assert runs["no-cotrain"].data.metrics["align.test_r2"] == full["align.test_r2"]
    assert (
        "decode.frames_per_second" in full
        and "cotrain.val_loss" not in runs["no-cotrain"].data.metrics
    )
    artifacts = {a.path for a in client.list_artifacts(runs["full"].info.run_id, "samples")}
    assert any(p.endswith(".gif") for p in artifacts) and any(p.endswith(".png") for p in artifacts)
    # the decode stage's clips: the smoke test set, 6 frames of 32 x 32
    clips = np.load(next((store / "cache" / "decode").glob("*/clips.npy")))
    assert clips.dtype == np.uint8 and clips.shape[1:] == (6, 32, 32, 3)
    out = spec.parent / "report"
    assert main(["report", str(spec), "--store", str(store), "--out", str(out)]) == 0
    assert "no-cotrain" in (out / "table.md").read_text()


@pytest.mark.slow
def test_the_same_spec_gives_the_same_numbers(generator_store, harness_run, tmp_path):
    """The full variant again from an empty store (past the per-dataset stages, copied): MBM,
    contrastive, the diffusion models, the adapter, co-training, decoding and scoring give
    every metric that is not a timing to the last digit."""
    from conftest import assert_same_numbers, run_results, run_suite, seed_cache

    spec, store = generator_store
    again = tmp_path / "again"
    seed_cache(harness_run[1], again)
    run_suite(spec, again, "--variant", "full")
    first, second = (run_results(s, "gen")["full"][1] for s in (store, again))
    assert "mbm.untrained_val_loss" in first and "cotrain.val_loss" in first
    assert_same_numbers(first, second, "two stores on this machine")


@pytest.mark.slow  # 20 s; the gpu tests run the same paths on a GPU
def test_the_gpus_bf16_paths_run_on_a_cpu(harness_run, tmp_path, monkeypatch):
    """MBM, co-training and decoding under bf16 autocast as on a GPU (through torch's CPU
    autocast): a dtype mistake that would stop every GPU run fails here."""
    from conftest import run_results, run_suite, seed_cache, write_spec

    from mindvideo import precision

    monkeypatch.setattr(precision, "AUTOCAST_ON_CPU", True)
    spec = write_spec(
        tmp_path,
        "suite: bf16\nprofile: smoke\nseeds: [0]\nsubjects: [subject1]\nvariants: {full: {}}\n"
        # two frames a clip: every bf16 path still runs, bf16 matmuls on a CPU are slow
        "overrides: {data.frames_per_clip: 2}\n",
    )
    store = tmp_path / "store"
    seed_cache(harness_run[1], store)
    run_suite(spec, store)
    metrics = run_results(store, "bf16")["full"][1]
    for key in ("mbm.val_loss", "cotrain.val_loss", "video_2way_top1", "ssim"):
        assert np.isfinite(metrics[key]), key


@pytest.mark.slow  # the smoke pipeline of 4 variants (45 s); tests/integration/
# test_paper_profile.py runs MinD-Video end to end through mvbench in the default run
def test_frame_rate_and_guidance_reuse_the_trained_models(generator_store, capsys):
    from harness.cli import main

    spec, store = generator_store
    assert main(["plan", str(spec), "--store", str(store), "--set", "decode.frames=12"]) == 0
    text = capsys.readouterr().out
    # only decode and evaluate run again: 3 each (full, no-cotrain, captions); the autoencoder
    # baseline does not depend on the frame rate
    assert "decode 3 (0 cached)" in text and "cotrain 1 (1 cached)" in text
    # what it will cost: recorded times of the cached stages, an estimate for the others
    assert "cached stages took" in text and "the 6 to compute: about" in text
    assert "diffusion 1 (1 cached)" in text and "align 1 (1 cached)" in text
    assert main(["plan", str(spec), "--store", str(store), "--set", "guidance.scale=3"]) == 0
    assert "cotrain 1 (1 cached)" in capsys.readouterr().out


def _pretrained_spec(tmp_path, generator_store):
    """The two-variant smoke suite with video pretraining on, in a store seeded with the
    generator store's shared stages (video_pretrain and later stages to compute)."""
    from conftest import seed_cache, write_spec

    spec, store = generator_store
    pretrained = write_spec(
        tmp_path,
        "suite: gen-vp\nprofile: smoke\nseeds: [0]\nsubjects: [subject1]\n"
        "overrides: {video_pretrain.enabled: true}\n"
        "variants: {full: {}, no-cotrain: {cotrain.enabled: false}}\n",
    )
    again = tmp_path / "store"
    stages = ("simulate", "foundation", "mbm", "contrastive", "diffusion", "align")
    seed_cache(store, again, stages)
    return pretrained, again


@pytest.mark.slow  # the smoke pipeline of 4 variants (45 s); tests/integration/
# test_paper_profile.py runs MinD-Video end to end through mvbench in the default run
def test_video_pretraining_is_opt_in_and_planned_in_pipeline_order(
    generator_store, tmp_path, capsys
):
    """Off (the default), video_pretrain's settings change no key: the committed runs stay
    cached. On, one pretraining serves both variants, and a stage that only a later variant
    has gets its plan column where it runs."""
    from conftest import write_spec

    from harness.cli import main

    spec, store = generator_store
    assert main(["plan", str(spec), "--store", str(store), "--set", "video_pretrain.clips=5"]) == 0
    text = capsys.readouterr().out
    assert "video_pretrain" not in text and "cotrain 1 (1 cached)" in text
    assert "decode 3 (3 cached)" in text

    pretrained, again = _pretrained_spec(tmp_path, generator_store)
    assert main(["plan", str(pretrained), "--store", str(again)]) == 0
    assert "video_pretrain 1 (0 cached)" in capsys.readouterr().out
    mixed = write_spec(
        tmp_path / "mixed",
        "suite: gen-mixed\nprofile: smoke\nseeds: [0]\nsubjects: [subject1]\n"
        "variants: {plain: {}, pretrained: {video_pretrain.enabled: true}}\n",
    )
    assert main(["plan", str(mixed), "--store", str(again)]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if "variant" in line)
    assert header.split()[7:10] == ["diffusion", "video_pretrain", "align"]


@pytest.mark.slow  # 40 s; the stage's parts are unit-tested in test_video_pretrain.py
def test_video_pretraining_is_shared_and_read_by_cotrain_and_decode(generator_store, tmp_path):
    """video_pretrain.enabled: one pretrained UNet serves both variants; co-training starts
    from it and decoding without co-training decodes it."""
    from conftest import run_results, run_suite

    _, store = generator_store
    pretrained, again = _pretrained_spec(tmp_path, generator_store)
    run_suite(pretrained, again)
    assert len(list((again / "cache" / "video_pretrain").glob("*/unet.safetensors"))) == 1
    runs = {v: m for v, (_, m) in run_results(again, "gen-vp").items()}
    before = {v: m for v, (_, m) in run_results(store, "gen").items()}
    for variant in ("full", "no-cotrain"):
        gap = runs[variant]["video_pretrain.direction_gap"]
        assert np.isfinite(gap) and gap == runs["full"]["video_pretrain.direction_gap"]
        # the same encoder, adapter and seed; only the UNet it starts from differs
        assert runs[variant]["ssim"] != before[variant]["ssim"], variant
    assert runs["full"]["cotrain.val_loss"] != before["full"]["cotrain.val_loss"]
