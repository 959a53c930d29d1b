"""Run leases: at most one worker runs a run key at a time, across processes and machines.

A worker claims a run by creating `<store>/leases/<experiment>/<run key>.lease` (O_CREAT |
O_EXCL) before it creates the run's MLflow child, keeps the file's modification time fresh from
a background thread (the heartbeat) while the run goes on, and deletes it when the run has
ended. A lease whose heartbeat is older than the timeout, or whose holder is a dead process on
this machine, is stale: the next claimer breaks it and takes the run over. Claims, breaks and
releases happen under one short exclusive lock per folder (`.guard`), so a stale lease is
broken by exactly one claimer, and a release never deletes a lease that another worker has
taken since.

Beside the lease, `<run key>.progress` says what its holder is doing (the stage, its units
done, the stage's own last word, seconds in), replaced whole at each report so that a reader
never sees half of it; `mvbench status` shows it for a live lease whose claim it names.

Ages are measured on the file system's clock, not this machine's: the guard file is touched and
its modification time read back, so workers on machines whose clocks disagree (a shared NFS
store) still agree on how old a heartbeat is.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.tracking import this_worker, worker_alive

DEFAULT_TIMEOUT_S = 60.0
GUARD = ".guard"
SUFFIX = ".lease"
PROGRESS = ".progress"
# A lease is never broken before this many of its holder's heartbeat intervals have passed,
# whatever timeout the claimer uses: a worker with a short timeout cannot break a live lease
# of a worker that beats slowly.
MISSED_BEATS = 3


def heartbeat_interval(timeout_s: float) -> float:
    """How often a holder refreshes its lease: six beats per timeout, at least every 10 s."""
    return min(10.0, timeout_s / 6)


def store_id(store: Path, create: bool = True) -> str | None:
    """The store's random identity (`<store>/leases/store-id`, written once; None if it has
    none and not `create`): tells a run leased in this store from one leased in another store
    that shares the same MLflow server."""
    path = Path(store) / "leases" / "store-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if not create:
            return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".store-id-{uuid.uuid4().hex}")
    tmp.write_text(uuid.uuid4().hex[:16] + "\n")
    try:
        os.link(tmp, path)  # atomic: the first writer wins, and readers never see it half written
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as its file says, and how old its heartbeat is."""

    worker: str  # host:pid:start-time
    token: str  # this claim's identity
    run: str  # the run's label, for messages
    heartbeat_s: float  # the holder's heartbeat interval
    age_s: float  # seconds since its last heartbeat, on the file system's clock
    stale: str  # "" while live, else why it is not
    progress: str = ""  # what the holder last said it was doing (RunLease.report), if anything

    @property
    def description(self) -> str:
        doing = f"{self.progress}; " if self.progress else ""
        return f"{doing}worker {self.worker}, heartbeat {self.age_s:.0f} s ago"


def duration(seconds: float) -> str:
    """Seconds as words: "42 s" under 90 s, else "1 h 05 min"."""
    minutes = round(seconds / 60)
    return f"{seconds:.0f} s" if seconds < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


def describe_progress(info: dict, age_s: float) -> str:
    """A progress report as words: "stage cotrain 2/6 (epoch 1/4 loss 0.0412), 0 h 03 min
    in"; `age_s`: how long ago it was written (its seconds in go on counting)."""
    units = info.get("units")
    count = f" {info.get('done', 0)}/{units}" if units else ""
    what = f" ({info['what']})" if info.get("what") else ""
    seconds = float(info.get("elapsed_s", 0.0)) + age_s
    return f"stage {info.get('stage', '?')}{count}{what}, {duration(seconds)} in"


@dataclass(frozen=True)
class Claim:
    acquired: bool
    # acquired: the stale lease this claim broke (None if there was none);
    # not acquired: the live lease that holds the run
    holder: Holder | None


@contextlib.contextmanager
def _guarded(folder: Path) -> Iterator[float]:
    """The folder's guard lock, held for a few file operations; yields the file system's
    current time."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / GUARD, "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            os.utime(guard.fileno())  # NFS: set to the server's time
            yield os.fstat(guard.fileno()).st_mtime
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


class RunLease:
    """The lease of one run key in a folder of leases (one folder per MLflow experiment)."""

    def __init__(
        self,
        folder: Path,
        key: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        label: str = "",
        worker: str | None = None,
    ):
        if timeout_s <= 0:
            raise ValueError(f"lease timeout {timeout_s}: give a number of seconds > 0")
        self.folder = Path(folder)
        self.path = self.folder / f"{key}{SUFFIX}"
        self.progress_path = self.folder / f"{key}{PROGRESS}"
        self.timeout_s = float(timeout_s)
        self.label = label
        self.worker = worker or this_worker()
        self.token = uuid.uuid4().hex
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.lost = ""  # why the heartbeat failed, if it did

    # Reading -------------------------------------------------------------------------------

    def _read(self, now: float) -> Holder | None:
        """The current holder (None: no lease). Opening the file, not stat-ing the name,
        makes an NFS client fetch fresh attributes (close-to-open consistency)."""
        try:
            with open(self.path) as f:
                mtime = os.fstat(f.fileno()).st_mtime
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except json.JSONDecodeError:
            info = {}  # unreadable (outside damage): judged by its age alone
        worker = str(info.get("worker", "?"))
        beat = float(info.get("heartbeat_s", heartbeat_interval(self.timeout_s)))
        age = max(0.0, now - mtime)
        limit = max(self.timeout_s, MISSED_BEATS * beat)
        stale = ""
        if worker_alive(worker) is False and worker != "?":
            stale = f"worker {worker} died"
        elif age > limit:
            stale = f"no heartbeat for {age:.0f} s (timeout {limit:.0f} s) from worker {worker}"
        token = str(info.get("token", ""))
        progress = self._progress(token, now) if token and not stale else ""
        return Holder(worker, token, str(info.get("run", "")), beat, age, stale, progress)

    def _progress(self, token: str, now: float) -> str:
        """The holder's last progress report, if the progress file is its claim's."""
        try:
            with open(self.progress_path) as f:
                mtime = os.fstat(f.fileno()).st_mtime
                info = json.loads(f.read())
        except (OSError, ValueError):  # none yet, or outside damage: no progress to show
            return ""
        if not isinstance(info, dict) or info.get("token") != token:
            return ""  # left by an earlier claim
        return describe_progress(info, max(0.0, now - mtime))

    def holder(self) -> Holder | None:
        """Who holds the run now (None: nobody)."""
        with _guarded(self.folder) as now:
            return self._read(now)

    # Claiming ------------------------------------------------------------------------------

    def acquire(self) -> Claim:
        """Take the lease unless a live worker holds it; a stale lease is broken (under the
        guard lock: by exactly one claimer). On success the heartbeat starts."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this lease")
        with _guarded(self.folder) as now:
            current = self._read(now)
            if current is not None and not current.stale:
                return Claim(False, current)
            if current is not None:
                self.path.unlink(missing_ok=True)
                self.progress_path.unlink(missing_ok=True)
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            info = {
                "worker": self.worker,
                "token": self.token,
                "run": self.label,
                "heartbeat_s": heartbeat_interval(self.timeout_s),
                "acquired": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            os.write(fd, (json.dumps(info) + "\n").encode())
            os.fsync(fd)  # NFS: the content is on the server before the guard is released
        self._fd = fd
        self._stop.clear()
        self._beat = threading.Thread(
            target=self._heartbeat, name=f"lease-{self.path.stem}", daemon=True
        )
        self._beat.start()
        return Claim(True, current)

    def report(self, stage: str, done: int, units: int | None, what: str, elapsed_s: float):
        """Say what the holder is doing now (shown by `mvbench status`): the stage, its units
        of work done of `units` (None: not counted), its own last word and its seconds so far.
        Progress is for people: a report that cannot be written is dropped, not raised."""
        if self._fd is None:
            return
        info = {
            "token": self.token,
            "stage": stage,
            "done": int(done),
            "units": units,
            "what": what,
            "elapsed_s": round(float(elapsed_s), 1),
        }
        tmp = self.progress_path.with_name(f".{self.progress_path.name}.{self.token}")
        try:
            tmp.write_text(json.dumps(info) + "\n")
            os.replace(tmp, self.progress_path)  # readers see the old report or the new one
        except OSError:
            tmp.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        interval = heartbeat_interval(self.timeout_s)
        while not self._stop.wait(interval):
            try:
                os.utime(self._fd)
            except OSError as e:  # the file was removed under us (NFS: ESTALE)
                self.lost = f"heartbeat failed: {e.strerror}"
                return

    def stop_heartbeat(self) -> None:
        """Stop refreshing the lease without releasing it, as a hung worker would: it goes
        stale after the timeout."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None

    def held(self) -> bool:
        """Whether this lease still holds the run (not broken by another claimer)."""
        if self._fd is None:
            return False
        with _guarded(self.folder) as now:
            current = self._read(now)
        if current is None or current.token != self.token:
            self.lost = self.lost or (
                f"taken over by worker {current.worker}" if current else "lease file removed"
            )
            return False
        return True

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still this one's."""
        if self._fd is None:
            return
        self.stop_heartbeat()
        try:
            with _guarded(self.folder) as now:
                current = self._read(now)
                if current is not None and current.token == self.token:
                    self.path.unlink(missing_ok=True)
                    self.progress_path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
