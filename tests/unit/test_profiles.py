import pytest

from harness.profiles import available_profiles, load_profile, parse_override
from mindvideo.data.windows import window_indices
from mindvideo.errors import ConfigError


def test_all_profiles_validate():
    assert {"smoke", "tiny", "paper"} <= set(available_profiles())
    for name in available_profiles():
        assert load_profile(name).profile == name


def test_tiny_gives_enough_samples_for_the_se_target():
    d = load_profile("tiny").data
    p = d.synth.protocol
    assert p.subjects >= 3
    per = lambda n_tr: len(window_indices(n_tr, d.window, d.window_offset, d.window_edge)[0])  # noqa: E731
    assert p.train_segments * per(p.train_trs) >= 1000
    assert p.test_segments * per(p.test_trs) >= 200  # 2-way SE = sqrt(.25/200) <= 0.035


def test_unknown_key_names_file_and_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: bad\ndata:\n  source: synth\n  synth: {brain: {sheet_sid: 8}}\n")
    with pytest.raises(ConfigError) as e:
        load_profile(str(bad))
    assert str(bad) in str(e.value)
    assert "data.synth.brain.sheet_sid: unknown key" in str(e.value)


def test_bad_literal_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"data.window_edge: Input should be 'drop' or 'clamp'"):
        load_profile("tiny", {"data.window_edge": "wrap"})


def test_a_bad_override_is_named_as_the_override_not_the_file(tmp_path):
    """The file holds a valid value: the message must point at the override that replaced it."""
    with pytest.raises(ConfigError) as e:
        load_profile("tiny", {"guidance.scale": "abc", "decod.frames": 3, "data.window": 2})
    text = str(e.value)
    assert "guidance.scale: Input should be a valid number" in text
    assert "(given by the override guidance.scale='abc', not the file)" in text
    assert "decod: unknown key" in text and "override decod.frames=3" in text
    assert "data.window" not in text  # a valid override is not mentioned
    bad = tmp_path / "bad.yaml"  # an error in the file itself blames no override
    bad.write_text("profile: bad\nguidance: {scale: abc}\n")
    with pytest.raises(ConfigError) as e:
        load_profile(str(bad), {"guidance.negative": "zeros"})
    assert "guidance.scale: Input should be a valid number" in str(e.value)
    assert "given by" not in str(e.value)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown profile 'tinny'; available: .*smoke.*tiny"):
        load_profile("tinny")


def test_overrides_parse_as_yaml():
    assert parse_override("data.window=3") == ("data.window", 3)
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert load_profile("smoke", dict([parse_override("data.window=3")])).data.window == 3
    with pytest.raises(ConfigError, match="expected key.path=value"):
        parse_override("data.window")


def test_yaml_tags_do_not_execute(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("profile: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_profile(str(evil))


def test_encoder_and_window_patch_sizes_must_agree():
    with pytest.raises(
        ConfigError, match=r"mbm.model.patch_size 8 but data.preprocess.patch_size 16"
    ):
        load_profile("tiny", {"mbm.model.patch_size": 8})
    profile = load_profile("tiny", {"mbm.model.patch_size": 8, "data.preprocess.patch_size": 8})
    assert profile.mbm.model.patch_size == 8


def test_a_profile_pickles_for_worker_processes():
    """The profile model is built from the stages' sections at run time; pool workers get
    profiles by pickle, so it must unpickle to an equal profile of the same class."""
    import pickle

    profile = load_profile("smoke", {"mbm.epochs": 3})
    again = pickle.loads(pickle.dumps(profile))
    assert again == profile and type(again) is type(profile) and again.mbm.epochs == 3
