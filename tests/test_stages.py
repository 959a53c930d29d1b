from mindvideo.stages import simulate as stage
from mindvideo.stages.base import StageContext


def test_simulate_stage_follows_the_interface(tmp_path, smoke_profile):
    assert stage.NAME == "simulate" and stage.INPUTS == () and isinstance(stage.VERSION, int)
    cfg = stage.CONFIG.model_validate(smoke_profile.data.synth.model_dump())
    logged = {}
    ctx = StageContext(seed=0, log_metric=lambda n, v, s=None: logged.__setitem__(n, v))
    result = stage.run(cfg, {}, tmp_path, ctx)
    assert result.metrics["subjects"] == 2 and logged == result.metrics
    assert all((tmp_path / a).exists() for a in result.artifacts)
