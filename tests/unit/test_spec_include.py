"""`include:` in suite specs: merge order, nesting, errors, and committed suites unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import write_spec

from harness.plan import build_plan
from harness.profiles import read_yaml
from harness.spec import load_spec
from mindvideo.errors import ConfigError

SUITES = Path(__file__).resolve().parents[2] / "experiments" / "suites"

SHARED = """
seeds: [0, 1, 2]
overrides:
  eval.extra_metrics: [motion_direction]
  decode.steps: 3
variants:
  full: {}
  shuffled: {decode.shuffle_fmri: true}
report:
  metrics: [ssim, psnr]
  samples: 1
"""


def test_the_spec_wins_mappings_merge_and_lists_replace(tmp_path):
    write_spec(tmp_path / "common", SHARED, "shared.yaml")
    spec = load_spec(
        write_spec(
            tmp_path,
            """
include: common/shared.yaml
profile: smoke
seeds: [4]
overrides: {decode.steps: 5, guidance.scale: 2.0}
variants:
  shuffled: {decode.shuffle_fmri: false}
  window-3: {data.window: 3}
report:
  metrics: [ssim]
""",
        )
    ).spec
    assert spec.seeds == (4,)  # a list replaces
    # the spec's keys merge over the included ones and come after them
    assert spec.overrides == {
        "eval.extra_metrics": ["motion_direction"],
        "decode.steps": 5,
        "guidance.scale": 2.0,
    }
    assert list(spec.overrides) == ["eval.extra_metrics", "decode.steps", "guidance.scale"]
    assert spec.variants == {
        "full": {},
        "shuffled": {"decode.shuffle_fmri": False},
        "window-3": {"data.window": 3},
    }
    assert spec.report.metrics == ("ssim",) and spec.report.samples == 1


def test_later_includes_win_and_includes_nest(tmp_path):
    write_spec(tmp_path / "common", "include: deeper/seeds.yaml\nseeds: [1]\n", "a.yaml")
    write_spec(tmp_path / "common" / "deeper", "seeds: [7]\nsubjects: [subject2]\n", "seeds.yaml")
    write_spec(tmp_path / "common", "seeds: [2]\n", "b.yaml")
    text = "profile: smoke\nvariants: {full: {}}\ninclude: [common/a.yaml, common/b.yaml]\n"
    spec = load_spec(write_spec(tmp_path, text)).spec
    assert spec.seeds == (2,)  # b over a over a's own include
    assert spec.subjects == ("subject2",)  # from two levels down, relative to a.yaml
    a_first = text.replace("[common/a.yaml, common/b.yaml]", "[common/b.yaml, common/a.yaml]")
    assert load_spec(write_spec(tmp_path, a_first)).spec.seeds == (1,)


def test_a_cycle_names_the_chain(tmp_path):
    write_spec(tmp_path, "include: b.yaml\nseeds: [1]\n", "a.yaml")
    write_spec(tmp_path, "include: a.yaml\n", "b.yaml")
    spec = write_spec(tmp_path, "include: a.yaml\nprofile: smoke\nvariants: {full: {}}\n")
    with pytest.raises(ConfigError) as e:
        load_spec(spec)
    msg = str(e.value)
    assert "a cycle of includes" in msg
    assert "suite.yaml -> " in msg and "a.yaml -> " in msg and msg.endswith("a.yaml")
    itself = write_spec(tmp_path, "include: self.yaml\nprofile: smoke\n", "self.yaml")
    with pytest.raises(ConfigError, match=r"self.yaml: include: self.yaml: a cycle"):
        load_spec(itself)


def test_a_missing_or_non_mapping_include_names_both_files(tmp_path):
    spec = write_spec(tmp_path, "include: common/nope.yaml\nprofile: smoke\n")
    with pytest.raises(ConfigError) as e:
        load_spec(spec)
    assert f"{spec}: include: common/nope.yaml: file not found" in str(e.value)
    listed = write_spec(tmp_path, "- seeds\n- [1]\n", "listed.yaml")
    spec = write_spec(tmp_path, "include: listed.yaml\nprofile: smoke\n")
    with pytest.raises(ConfigError) as e:
        load_spec(spec)
    assert f"{listed} (included by {spec}): an included file must be a mapping" in str(e.value)
    spec = write_spec(tmp_path, "include: {a: 1}\nprofile: smoke\n")
    with pytest.raises(ConfigError, match=r"include: \{'a': 1\}: give a file or a list"):
        load_spec(spec)


def test_errors_in_included_keys_name_the_included_file(tmp_path):
    shared = write_spec(tmp_path, "seedz: [1]\nreport: {samples: -1}\n", "shared.yaml")
    spec = write_spec(tmp_path, "include: shared.yaml\nprofile: smoke\nvariants: {full: {}}\n")
    with pytest.raises(ConfigError) as e:
        load_spec(spec)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{spec}: invalid spec"
    (seedz,) = [x for x in lines if x.startswith("  seedz: unknown key")]
    assert seedz.endswith(f"(from {shared}, included by {spec})")
    (samples,) = [x for x in lines if x.startswith("  report.samples:")]
    assert f"(from {shared}, included by {spec})" in samples
    named = write_spec(tmp_path, "suite: shared\n", "named.yaml")
    spec = write_spec(tmp_path, "include: named.yaml\nprofile: smoke\nvariants: {full: {}}\n")
    with pytest.raises(ConfigError) as e:
        load_spec(spec)
    assert f"{named} (included by {spec}): suite: an included file must not name" in str(e.value)


def test_the_loaded_spec_says_which_file_gave_an_override(tmp_path):
    # for errors found later, when the overrides meet the profile (the planner)
    shared = write_spec(tmp_path, "overrides: {decode.steps: 3}\n", "shared.yaml")
    text = "include: shared.yaml\nprofile: smoke\noverrides: {data.window: 3}\nvariants: {a: {}}\n"
    spec = load_spec(path := write_spec(tmp_path, text))
    assert spec.given_by(("overrides", "decode.steps")) == shared
    assert spec.given_by(("overrides", "data.window")) == path
    assert spec.given_by(("variants", "a")) == path


def test_an_error_in_the_spec_itself_names_no_include(tmp_path):
    write_spec(tmp_path, "seeds: [1]\n", "shared.yaml")
    spec = write_spec(tmp_path, "include: shared.yaml\nprofile: smoke\nvariantz: {full: {}}\n")
    with pytest.raises(ConfigError) as e:
        load_spec(spec)
    assert "variantz: unknown key" in str(e.value) and "included by" not in str(e.value)


def _inlined(path: Path) -> str:
    """The spec written out as one file: each included mapping merged under the spec's own, key
    by key, as an include is documented to merge (the committed includes hold no include)."""
    own = read_yaml(path)
    names = own.pop("include")
    names = [names] if isinstance(names, str) else names
    merged: dict = {}
    for name in names:
        shared = read_yaml(path.parent / name)
        assert "include" not in shared
        merged = _merge(merged, shared)
    return yaml.safe_dump(_merge(merged, own), sort_keys=False)


def _merge(below: dict, top: dict) -> dict:
    out = dict(below)
    for key, value in top.items():
        under = out.get(key)
        out[key] = (
            _merge(under, value) if isinstance(under, dict) and isinstance(value, dict) else value
        )
    return out


def test_committed_suites_with_include_plan_as_if_inlined(tmp_path):
    including = [p for p in sorted(SUITES.glob("*.yaml")) if "include" in read_yaml(p)]
    assert including, "no committed suite uses include: the test checks nothing"
    for path in including:
        inlined = write_spec(tmp_path, _inlined(path), path.name)
        spec, copy = load_spec(path), load_spec(inlined)
        assert spec.hash == copy.hash, path.name
        assert spec.spec == copy.spec, path.name
        keys = [r.key for r in build_plan(spec).runs]
        assert keys == [r.key for r in build_plan(copy).runs], path.name
