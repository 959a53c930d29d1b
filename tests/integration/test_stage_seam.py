"""The stage seam: a stage is one module of mindvideo/stages/ declaring STAGE, and the harness
plans, runs, caches and tracks it from that description alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import run_results, run_suite, seed_cache, write_spec

import mindvideo.stages
from harness.plan import build_plan, pipeline
from harness.profiles import load_profile
from harness.spec import load_spec
from mindvideo.errors import ConfigError
from mindvideo.stages.registry import stages

REPO = Path(__file__).resolve().parents[2]

# A toy stage: everything a stage declares, in one module that imports only the interface.
TOY_STAGE = '''
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mindvideo.stages.base import Stage, StageResult, dataset_root


class ToySection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    scale: float = Field(1.0, gt=0)


class ToyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str
    scale: float


def configure(profile, subject):
    return ToyConfig(subject=subject, scale=profile.toy.scale)


def run(cfg, inputs, out, ctx):
    """The subject's number of test runs, scaled: proof that it read its input."""
    found = sorted((dataset_root(inputs["dataset"]) / cfg.subject).rglob("*"))
    value = cfg.scale * len(found)
    (out / "toy.txt").write_text(f"{value}\\n")
    ctx.log_metric("toy_files", value, None)
    return StageResult(metrics={"toy_files": value}, artifacts=[Path("toy.txt")])


STAGE = Stage(
    name="toy",
    run=run,
    config=ToyConfig,
    configure=configure,
    version=1,
    order=15,
    inputs=("dataset",),
    enabled=lambda profile: profile.toy.enabled,
    sections={"toy": ToySection},
    seeded=False,
    headline=("toy_files",),
    artifacts=("toy.txt",),
)
'''


@pytest.fixture
def toy_stage(tmp_path, monkeypatch):
    """mindvideo/stages/ with one more module in it (a folder added to the package's path)."""
    folder = tmp_path / "more_stages"
    folder.mkdir()
    (folder / "toy.py").write_text(TOY_STAGE)
    monkeypatch.setattr(mindvideo.stages, "__path__", [*mindvideo.stages.__path__, str(folder)])
    yield folder
    sys.modules.pop("mindvideo.stages.toy", None)


def toy_profile(folder: Path, section: str = "toy:\n  enabled: true\n  scale: 2.0\n") -> Path:
    text = (REPO / "experiments" / "profiles" / "smoke.yaml").read_text()
    path = folder / "smoke_toy.yaml"
    path.write_text(text + "\n" + section)
    return path


def test_a_toy_stage_runs_from_one_module_and_one_profile_section(toy_stage, tmp_path, harness_run):
    """No edit in harness/: the new stage is planned, bound, cached and tracked."""
    assert "toy" in stages()
    profile = toy_profile(tmp_path)
    spec = write_spec(
        tmp_path,
        f"suite: toy\nprofile: {profile}\nseeds: [0]\nsubjects: [subject1]\n"
        "baselines: [ridge]\nreport:\n  metrics: [toy_files, video_2way_top1]\n",
    )
    plan = build_plan(load_spec(spec))
    (run,) = plan.runs
    names = [plan.node(k).name for k in run.stages]
    assert names == ["simulate", "foundation", "toy", "baselines", "evaluate"]
    toy = next(plan.node(k) for k in run.stages if plan.node(k).name == "toy")
    assert plan.node(toy.inputs["dataset"]).name == "simulate"
    assert toy.seed is None and toy.config.scale == 2.0

    store = tmp_path / "store"
    seed_cache(harness_run[1], store, ("simulate", "foundation", "baselines", "evaluate"))
    run_suite(spec, store)
    (entry,) = [p for p in (store / "cache" / "toy").iterdir() if p.is_dir()]
    value = float((entry / "toy.txt").read_text())
    assert value > 0
    _, metrics = run_results(store, "toy")["ridge"]
    assert metrics["toy_files"] == value  # a headline metric: logged without the prefix
    assert "video_2way_top1" in metrics

    # off by default: a profile without the section plans the stages it planned before
    assert "toy" not in dict(pipeline(load_profile("smoke", {"method": "ridge"})))
    with pytest.raises(ConfigError, match=r"report.metrics: \['toy_files'\] are not logged"):
        build_plan(load_spec(spec, profile="smoke"))


def test_a_misspelt_toy_section_key_is_an_error_naming_it(toy_stage, tmp_path):
    path = toy_profile(tmp_path, "toy:\n  enabeld: true\n")
    with pytest.raises(ConfigError, match=r"toy.enabeld: unknown key"):
        load_profile(str(path))


def test_a_module_without_a_stage_is_an_error_naming_the_file(tmp_path, monkeypatch):
    (tmp_path / "helpers.py").write_text("X = 1\n")
    monkeypatch.setattr(mindvideo.stages, "__path__", [*mindvideo.stages.__path__, str(tmp_path)])
    try:
        with pytest.raises(ConfigError, match=r"helpers.py: a module of mindvideo/stages/ must"):
            stages()
    finally:
        sys.modules.pop("mindvideo.stages.helpers", None)


def test_two_stages_in_one_place_are_an_error(toy_stage):
    text = (toy_stage / "toy.py").read_text().replace('name="toy"', 'name="toy2"')
    (toy_stage / "toy2.py").write_text(text.replace("order=15", "order=10"))
    try:
        with pytest.raises(ConfigError, match=r"same order 10"):
            stages()
    finally:
        sys.modules.pop("mindvideo.stages.toy2", None)


def test_pipelines_of_the_committed_profiles():
    """The stages each kind of run has, bound as the method needs."""
    tiny = load_profile("tiny")
    names = [name for name, _ in pipeline(tiny)]
    assert (
        names
        == "simulate foundation mbm contrastive diffusion align cotrain decode evaluate".split()
    )
    bound = dict(pipeline(tiny))
    assert bound["cotrain"]["contrastive"] == "align"  # the adapter's encoder
    assert "foundation" not in bound["decode"]  # only decoding from captions reads the CLIP
    caption = dict(pipeline(load_profile("tiny", {"decode.condition": "caption"})))
    assert caption["decode"]["foundation"] == "foundation"
    finetune = load_profile("tiny", {"mbm.finetune_epochs": 1, "interpret.enabled": True})
    bound = dict(pipeline(finetune))
    assert bound["contrastive"]["mbm"] == "mbm_finetune"
    assert bound["interpret"] == {
        "dataset": "simulate",
        "mbm": "mbm_finetune",
        "contrastive": "contrastive",  # pinned: the encoder itself, not through the adapter
        "cotrain": "cotrain",
    }
    ae = [name for name, _ in pipeline(load_profile("tiny", {"method": "autoencoder"}))]
    assert ae == ["simulate", "foundation", "diffusion", "baselines", "evaluate"]
    encoder = [n for n, _ in pipeline(load_profile("tiny", {"stop_after": "contrastive"}))]
    assert encoder == ["simulate", "foundation", "mbm", "contrastive"]
    real = dict(pipeline(load_profile("paper")))
    assert "simulate" not in real and real["foundation"] == {"dataset": "dataset"}
