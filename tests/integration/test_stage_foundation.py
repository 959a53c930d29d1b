"""The foundation stage's real-data path: pre-trained judges and CLIP recorded by path."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from conftest import TINY_CLIP_ARCH, tiny_videomae_judge, tiny_vit_judge

from mindvideo.errors import ConfigError, DataError
from mindvideo.eval.foundation import load_scorers
from mindvideo.eval.judges import Judge
from mindvideo.models.clip import ClipModel
from mindvideo.stages import foundation
from mindvideo.stages.base import StageContext


def test_real_data_records_paths_and_loads_them(tmp_path):
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / "mvbench-test-found.json").write_text(json.dumps(TINY_CLIP_ARCH))
    open_clip.add_model_config(tmp_path / "arch")
    checkpoint = tmp_path / "clip.pt"
    torch.save(open_clip.create_model("mvbench-test-found").state_dict(), checkpoint)
    cfg = foundation.FoundationConfig(
        synthetic=False,
        frame_judge=str(tiny_vit_judge(tmp_path / "vit")),
        video_judge=str(tiny_videomae_judge(tmp_path / "videomae")),
        clip_checkpoint=str(checkpoint),
        clip_model="mvbench-test-found",
    )
    out = tmp_path / "out"
    out.mkdir()
    result = foundation.run(cfg, {}, out, StageContext())
    assert result.artifacts == [out.joinpath(foundation.POINTERS).relative_to(out)]
    recorded = json.loads((out / foundation.POINTERS).read_text())
    assert recorded["clip_model"] == "mvbench-test-found"
    scorers = load_scorers(out)
    assert isinstance(scorers.frame_judge, Judge) and scorers.frame_judge.kind == "frame"
    assert isinstance(scorers.video_judge, Judge) and scorers.video_judge.kind == "video"
    assert isinstance(scorers.clip, ClipModel)


def test_real_data_needs_every_path(tmp_path):
    cfg = foundation.FoundationConfig(synthetic=False, frame_judge=str(tmp_path))
    with pytest.raises(ConfigError, match="eval.video_judge, eval.clip_checkpoint"):
        foundation.run(cfg, {}, tmp_path, StageContext())
    cfg = foundation.FoundationConfig(
        synthetic=False,
        frame_judge=str(tmp_path / "nope"),
        video_judge=str(tmp_path),
        clip_checkpoint=str(tmp_path),
    )
    with pytest.raises(DataError, match="eval.frame_judge: .*nope does not exist"):
        foundation.run(cfg, {}, tmp_path, StageContext())
