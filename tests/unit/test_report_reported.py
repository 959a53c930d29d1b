"""Published numbers: the committed file validates, its rows join real-data tables marked and
never on SynthCC, and a broken file gets an error naming it."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from harness.report.build import _published
from harness.report.reported import (
    ReportedRow,
    Scoring,
    load_reported,
    reported_rows,
    why_apart,
    write_apart,
)
from harness.report.tables import write_tables
from mindvideo.errors import ConfigError


def test_the_committed_cc2017_file_holds_the_published_mindvideo_row():
    reported = load_reported("cc2017")
    assert reported is not None and "NeuroClips" in reported.source
    mindvideo = next(r for r in reported.rows if r.method == "MinD-Video 2023")
    assert mindvideo.metrics["video_2way_top1"] == 0.839 and mindvideo.metrics["ssim"] == 0.171
    rows = reported_rows(reported, ["video_2way_top1", "epe"])
    # methods that report neither metric are left out; the others show NaN where not reported
    assert "Nishimoto 2011 [subject 1] (reported)" not in set(rows.variant)
    nan = rows[(rows.base == "MinD-Video 2023") & (rows.metric == "epe")]["mean"]
    assert nan.isna().all()


def _plan(source: str):
    run = SimpleNamespace(profile=SimpleNamespace(data=SimpleNamespace(source=source)))
    return SimpleNamespace(runs=[run, run])


def test_published_rows_only_beside_real_cc2017_runs():
    assert _published(_plan("synth"), ["video_2way_top1"]) is None
    rows, source, apart = _published(_plan("cc2017"), ["video_2way_top1"])
    assert not rows.empty and "Table 1" in source and apart == []


def test_a_published_row_compares_only_when_scored_as_the_runs(tmp_path):
    metrics = ["video_2way_top1", "ssim"]
    paper = Scoring.of([("mindvideo", 1200, False)] * 3)
    rows, _, apart = _published(_plan("cc2017"), metrics, paper)
    assert "MinD-Video 2023 [mean of 3] (reported)" in set(rows.variant) and apart == []
    # dropping the windows that leave a segment scores 1,185: MinD-Video's row goes apart,
    # rows whose source states no sample count stay
    dropped = Scoring.of([("mindvideo", 1185, False)] * 3)
    rows, source, apart = _published(_plan("cc2017"), metrics, dropped)
    assert "MinD-Video 2023 [mean of 3] (reported)" not in set(rows.variant)
    assert "NEURONS 2025 [mean of 3] (reported)" in set(rows.variant)
    ((row, why),) = apart
    assert row.method == "MinD-Video 2023"
    assert why == ["1,200 test samples, these runs scored 1,185"]
    text = write_apart(tmp_path / "reported.md", source, apart, metrics).read_text()
    assert "| MinD-Video 2023 | mean of 3 | 0.839 | 0.171 | 1,200 test samples" in text
    # another protocol: nothing compares; runs that disagree are named with every value
    other = Scoring.of([("mind-animator", 1200, False), ("mind-animator", 1185, True)])
    rows, _, apart = _published(_plan("cc2017"), metrics, other)
    assert rows.empty and len(apart) == len(load_reported("cc2017").rows)
    mindvideo = dict((r.method, w) for r, w in apart)["MinD-Video 2023"]
    assert mindvideo[0] == "protocol mindvideo, these runs mind-animator"
    assert mindvideo[1] == "1,200 test samples, these runs scored 1,185 and 1,200"
    stated = ReportedRow(method="x", subjects="s1", metrics={}, scene_cuts="excluded")
    assert why_apart(stated, "mindvideo", paper) == ["scene-cut clips excluded, in these runs kept"]


def test_table_lists_published_rows_last_marked_and_never_best(tmp_path):
    runs = pd.DataFrame(
        [
            {
                "variant": "full",
                "base": "full",
                "kind": "model",
                "subject": "s1",
                "seed": 0,
                "video_2way_top1": 0.70,
            },
            {
                "variant": "ridge",
                "base": "ridge",
                "kind": "baseline",
                "subject": "s1",
                "seed": 0,
                "video_2way_top1": 0.60,
            },
        ]
    )
    reported = load_reported("cc2017")
    rows = reported_rows(reported, ["video_2way_top1"])
    write_tables(
        runs,
        ["video_2way_top1"],
        tmp_path,
        "full",
        formats=("md", "tex"),
        group_by=("average",),
        reported=(rows, reported.source),
    )
    md = (tmp_path / "table.md").read_text().splitlines()
    body = [
        line for line in md if line.startswith("| ") and "Variant" not in line and ":--" not in line
    ]
    assert body[0].startswith("| full") and body[1].startswith("| ridge")
    assert body[-1].startswith("| NEURONS 2025 [mean of 3] (reported) | 0.863 |")  # not bold
    assert any("**0.700**" in line for line in body)  # the best run stays bold
    assert "not re-run here" in "\n".join(md)
    assert r"NEURONS 2025 [mean of 3] (reported)" in (tmp_path / "table.tex").read_text()


def test_a_broken_file_is_named(tmp_path):
    (tmp_path / "cc2017.yaml").write_text("dataset: cc2017\nprotocol: mindvideo\nrows: []\n")
    with pytest.raises(ConfigError, match=r"(?s)cc2017.yaml.*source: Field required"):
        load_reported("cc2017", tmp_path)
    (tmp_path / "cc2017.yaml").write_text(
        "dataset: synth\nprotocol: mindvideo\nsource: x\nrows: []\n"
    )
    with pytest.raises(ConfigError, match="named for 'cc2017'"):
        load_reported("cc2017", tmp_path)
    assert load_reported("hcp", tmp_path) is None
