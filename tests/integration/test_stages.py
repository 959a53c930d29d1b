from mindvideo.stages import simulate as stage
from mindvideo.stages.base import StageContext


def test_simulate_stage_follows_the_interface(tmp_path, smoke_profile):
    described = stage.STAGE
    assert described.name == "simulate" and described.inputs == ()
    assert isinstance(described.version, int) and described.role == "dataset"
    cfg = described.config.model_validate(smoke_profile.data.synth.model_dump())
    logged = {}
    ctx = StageContext(seed=0, log_metric=lambda n, v, s=None: logged.__setitem__(n, v))
    result = stage.run(cfg, {}, tmp_path, ctx)
    assert result.metrics["subjects"] == 2 and logged == result.metrics
    assert all((tmp_path / a).exists() for a in result.artifacts)


def test_kept_samples_are_spread_over_the_test_set():
    from mindvideo.stages.evaluate import sample_indices

    assert sample_indices(228, 4) == [0, 76, 151, 227]  # first, last and evenly between
    assert sample_indices(3, 5) == [0, 1, 2]  # never more than there are
    assert sample_indices(9, 1) == [0] and sample_indices(9, 0) == []
