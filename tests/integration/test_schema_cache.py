"""New SQLite stores start from a cached empty MLflow database (harness/tracking.py): the
first store builds it with MLflow's migrations, later ones copy it; nothing is overwritten."""

from __future__ import annotations

import sqlite3

from harness import tracking as T


def _runs(db) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]


def test_a_second_store_starts_from_the_first_ones_empty_schema(tmp_path, monkeypatch):
    monkeypatch.setenv(T.SCHEMA_CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    template = T.schema_template()
    assert template.parent == tmp_path / "cache" and not template.exists()
    first = T.Tracker(tmp_path / "a")
    first.start_parent(first.experiment("suite"), {})  # runs in a: the template stays empty
    assert template.is_file() and _runs(template) == 0
    assert _runs(tmp_path / "a" / "mlflow.db") == 1

    assert T.copy_schema_template(tmp_path / "b.db")  # what a new store does first
    second = T.Tracker(tmp_path / "c")  # and through the tracker
    exp = second.experiment("suite")
    run = second.start_parent(exp, {})
    assert second.client.get_run(run).info.experiment_id == exp
    default = second.client.get_experiment("0")
    assert default.artifact_location == str(tmp_path / "mlruns" / "0")  # as MLflow would write


def test_an_existing_database_is_never_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv(T.SCHEMA_CACHE_ENV, str(tmp_path / "cache"))
    tracker = T.Tracker(tmp_path / "a")
    tracker.start_parent(tracker.experiment("suite"), {})
    db = tmp_path / "a" / "mlflow.db"
    assert not T.copy_schema_template(db)
    assert _runs(db) == 1 and not list(db.parent.glob(".*.tmp"))
    # a database with runs is not kept as the template
    T.schema_template().unlink()
    T.save_schema_template(db)
    assert not T.schema_template().exists()


def test_the_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv(T.SCHEMA_CACHE_ENV, "off")
    assert T.schema_template() is None
    T.Tracker(tmp_path / "a")
    assert not T.copy_schema_template(tmp_path / "b.db") and not (tmp_path / "b.db").exists()
