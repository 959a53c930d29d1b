"""The stage cache: atomic publication, locking, stale temporary folders, damaged entries."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from harness.cache import MANIFEST, StageCache
from harness.plan import StageNode


def node(key: str = "k1") -> StageNode:
    return StageNode("toy", key, None, {}, None)


def write_file(out: Path, text: str = "data") -> dict:
    (out / "result.txt").write_text(text)
    return {"metrics": {"x": 1.0}, "series": [], "artifacts": ["result.txt"]}


def test_compute_then_hit(tmp_path):
    cache = StageCache(tmp_path)
    calls = []

    def produce(out: Path) -> dict:
        calls.append(out)
        return write_file(out)

    manifest, computed = cache.compute(node(), produce)
    assert computed and manifest["metrics"] == {"x": 1.0} and manifest["key"] == "k1"
    assert (cache.path(node()) / "result.txt").read_text() == "data"
    again, computed = cache.compute(node(), produce)
    assert not computed and again == manifest and len(calls) == 1
    assert calls[0].name.startswith(".tmp-k1-") and not calls[0].exists()


def test_failure_publishes_nothing(tmp_path):
    cache = StageCache(tmp_path)

    def produce(out: Path) -> dict:
        (out / "half.txt").write_text("half")
        raise RuntimeError("stage crashed")

    with pytest.raises(RuntimeError, match="stage crashed"):
        cache.compute(node(), produce)
    assert cache.manifest(node()) is None
    assert list((tmp_path / "cache" / "toy").iterdir()) == [tmp_path / "cache" / "toy" / ".k1.lock"]


def test_stale_temporary_folder_is_removed_and_never_trusted(tmp_path):
    cache = StageCache(tmp_path)
    stale = tmp_path / "cache" / "toy" / ".tmp-k1-12345-deadbeef"
    stale.mkdir(parents=True)
    (stale / MANIFEST).write_text("{}")  # even with a manifest inside, a tmp folder is not an entry
    assert cache.manifest(node()) is None
    cache.compute(node(), write_file)
    assert not stale.exists() and cache.manifest(node()) is not None


def test_damaged_manifest_is_moved_aside_and_recomputed(tmp_path):
    cache = StageCache(tmp_path)
    cache.compute(node(), write_file)
    (cache.path(node()) / MANIFEST).write_text("{not json")
    manifest, computed = cache.compute(node(), lambda out: write_file(out, "again"))
    assert computed and (cache.path(node()) / "result.txt").read_text() == "again"
    assert len(list((tmp_path / "cache" / "toy").glob("k1.damaged-*"))) == 1


def _slow_worker(store: str, key: str, log: str) -> None:
    def produce(out: Path) -> dict:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        return write_file(out)

    StageCache(Path(store)).compute(node(key), produce)


def test_concurrent_workers_compute_a_key_once(tmp_path):
    log = tmp_path / "calls.txt"
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(target=_slow_worker, args=(str(tmp_path), "k2", str(log))) for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(log.read_text().split()) == 1
    assert StageCache(tmp_path).manifest(node("k2")) is not None


def _hang(store: str, started: str) -> None:
    def produce(out: Path) -> dict:
        (out / "partial.bin").write_bytes(b"x" * 1000)
        Path(started).write_text("1")
        time.sleep(60)
        return write_file(out)

    StageCache(Path(store)).compute(node("k3"), produce)


def _hanging_writer(store: Path):
    """A process computing key k3 that hangs inside the stage, started and inside it."""
    started = store / "started"
    p = mp.get_context("fork").Process(target=_hang, args=(str(store), str(started)))
    p.start()
    deadline = time.time() + 20
    while not started.exists() and time.time() < deadline:
        time.sleep(0.02)
    return p


def test_killed_writer_leaves_no_trusted_entry_and_releases_the_lock(tmp_path):
    p = _hanging_writer(tmp_path)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    cache = StageCache(tmp_path)
    assert cache.manifest(node("k3")) is None
    assert list((tmp_path / "cache" / "toy").glob(".tmp-k3-*"))  # the debris is there...
    manifest, computed = cache.compute(node("k3"), write_file)  # ...the lock is not held
    assert computed and not list((tmp_path / "cache" / "toy").glob(".tmp-k3-*"))


def test_a_worker_waiting_on_a_held_key_says_who_holds_it(tmp_path, capfd, monkeypatch):
    import harness.cache as C

    monkeypatch.setattr(C, "WAIT_FIRST_NOTE_S", 0.2)
    monkeypatch.setattr(C, "WAIT_NOTE_S", 0.3)
    p = _hanging_writer(tmp_path)
    killer = threading.Timer(1.2, os.kill, (p.pid, signal.SIGKILL))
    killer.start()  # the holder hangs; the waiter goes on once it is stopped
    try:
        manifest, computed = StageCache(tmp_path).compute(node("k3"), write_file)
    finally:
        killer.cancel()
        p.join(10)
    assert computed
    err = capfd.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("waiting")]
    assert len(notes) >= 2, err  # after WAIT_FIRST_NOTE_S, then every WAIT_NOTE_S
    assert "toy stage k3" in notes[0] and f"process {p.pid} on " in notes[0]
    assert "stop that process if it hangs" in notes[0]
    # the finished holder's name is not left behind for the next waiter
    assert (tmp_path / "cache" / "toy" / ".k3.lock").read_text() == ""


def test_sweep_removes_only_dead_writers_debris(tmp_path):
    cache = StageCache(tmp_path)
    folder = tmp_path / "cache" / "toy"
    folder.mkdir(parents=True)
    dead = mp.get_context("fork").Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    stale = folder / f".tmp-k4-{dead.pid}-abcd1234"
    live = folder / f".tmp-k5-{os.getpid()}-abcd1234"
    stale.mkdir()
    live.mkdir()
    assert cache.sweep() == 1
    assert not stale.exists() and live.exists()
