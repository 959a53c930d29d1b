"""The content-addressed stage cache: <store>/cache/<stage>/<key>/ with a manifest.

An entry exists only once its manifest is inside and the folder has been renamed into place:
a stage computes into a temporary sibling folder, the manifest is written last, and one
`rename` publishes it. A per-key file lock makes concurrent workers wait for each other
instead of computing the same key twice; a process killed mid-stage leaves only a temporary
folder, which the next writer of that key removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.memory import peak_memory
from mindvideo.stages.base import Stage

# The key of a stage's entry: its name and version, its config as key_config reads it, the keys
# of its inputs and, if it is seeded, the seed. Every run key hashes its stages' keys.


def stage_key(stage: Stage, cfg: BaseModel, inputs: Mapping[str, str], seed: int | None) -> str:
    """The content key of one execution of `stage` (the folder name of its cache entry)."""
    return digest(
        {
            "stage": stage.name,
            "version": stage.version,
            "config": key_config(cfg, stage.key_neutral, stage.key_renamed, stage.key_ignored),
            "inputs": dict(inputs),
            "seed": seed,
        }
    )


_ANY = object()  # key_config: a field left out whatever it holds


def key_config(
    cfg: BaseModel,
    neutral: dict[tuple[str, ...], Any],
    renamed: dict[tuple[str, ...], dict[str, str]] | None = None,
    ignored: Iterable[tuple[str, ...]] = (),
) -> dict:
    """A stage config as its cache key reads it: the fields a stage added later (`neutral`:
    path -> the value that behaves as before the field existed) are left out while they hold
    that value, and values renamed since (`renamed`: path -> {new: old}) read as before, so
    entries cached before either keep their keys. `ignored` fields (switches that change no
    number, such as activation checkpointing) are left out whatever they hold."""
    config = cfg.model_dump(mode="json")
    neutral = dict(neutral)
    for path in ignored:
        neutral[path] = _ANY
    for path, names in (renamed or {}).items():
        *parents, leaf = path
        section = config
        for part in parents:
            section = section.get(part) or {}
        if isinstance(section.get(leaf), list):
            section[leaf] = [names.get(v, v) for v in section[leaf]]
        elif leaf in section:
            section[leaf] = names.get(section[leaf], section[leaf])
    for path, value in neutral.items():
        *parents, leaf = path
        section = config
        for part in parents:
            section = section.get(part) or {}
        if leaf in section and (value is _ANY or section[leaf] == value):
            del section[leaf]
    return config


def digest(payload: Any, n: int = 20) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


@dataclass(frozen=True)
class StageNode:
    """One stage execution, identified by its content key."""

    name: str
    key: str
    config: BaseModel | None
    inputs: dict[str, str]  # role -> key of the upstream node
    seed: int | None  # None: the stage does not depend on the run seed
    external: Path | None = None  # a real dataset read in place

    @property
    def label(self) -> str:
        return f"{self.name}/{self.key}"


MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"


WAIT_FIRST_NOTE_S = 10.0  # a worker waiting this long for a key's lock says who holds it...
WAIT_NOTE_S = 60.0  # ... and again this often


@contextlib.contextmanager
def file_lock(
    path: Path, on_wait: Callable[[str, float], None] | None = None, holder: str = ""
) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created if missing), released on exit or death.

    With `on_wait`, the holder writes `holder` (who it is, what it computes) into the file, and
    a worker that finds the lock taken calls on_wait(that text, seconds waited) after
    WAIT_FIRST_NOTE_S and then every WAIT_NOTE_S while it waits: a long wait is never silent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        if on_wait is None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        else:
            started, noted = time.monotonic(), None
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = time.monotonic() - started
                    due = WAIT_FIRST_NOTE_S if noted is None else noted + WAIT_NOTE_S
                    if waited >= due:
                        handle.seek(0)
                        on_wait(handle.read().strip() or "another process", waited)
                        noted = waited
                    time.sleep(0.5)
            if holder:
                handle.truncate(0)
                handle.write(holder + "\n")
                handle.flush()
        try:
            yield
        finally:
            if holder:
                handle.truncate(0)  # no waiter reads a finished holder's name
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StageCache:
    """Finished stage outputs by key."""

    def __init__(self, store: Path):
        self.root = Path(store) / "cache"

    def path(self, node: StageNode) -> Path:
        if node.external is not None:
            return node.external
        return self.root / node.name / node.key

    def manifest(self, node: StageNode) -> dict | None:
        """The entry's manifest, or None when the stage has not finished for this key."""
        if node.external is not None:
            return {"stage": node.name, "key": node.key, "metrics": {}, "series": []}
        path = self.path(node) / MANIFEST
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError):
            # Published entries are complete by construction; an unreadable manifest means
            # outside damage. Move the entry aside (never delete work) and recompute.
            folder = self.path(node)
            folder.rename(folder.with_name(f"{node.key}.damaged-{uuid.uuid4().hex[:6]}"))
            return None

    def compute(self, node: StageNode, produce: Callable[[Path], dict]) -> tuple[dict, bool]:
        """The entry for `node`, computing it with produce(tmp_folder) -> manifest fields if
        needed. Returns (manifest, computed)."""
        if (found := self.manifest(node)) is not None:
            return found, False
        final = self.path(node)
        what = f"{node.name} stage {node.key[:12]}"

        def waiting(holder: str, waited: float) -> None:
            print(
                f"waiting {waited:.0f} s for the {what}, which {holder} is computing; its "
                "result will be used here (stop that process if it hangs)",
                file=sys.stderr,
            )

        holder = (
            f"process {os.getpid()} on {socket.gethostname()} (since {time.strftime('%H:%M:%S')})"
        )
        with file_lock(final.parent / f".{node.key}.lock", on_wait=waiting, holder=holder):
            if (found := self.manifest(node)) is not None:  # another worker finished it
                return found, False
            for stale in final.parent.glob(f"{TMP_PREFIX}{node.key}-*"):
                shutil.rmtree(stale, ignore_errors=True)  # left by a killed process
            tmp = final.parent / f"{TMP_PREFIX}{node.key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            try:
                started, window = time.time(), peak_memory()
                fields = produce(tmp)
                manifest = {
                    "stage": node.name,
                    "key": node.key,
                    "config": node.config.model_dump(mode="json") if node.config else None,
                    "inputs": node.inputs,
                    "seed": node.seed,
                    **fields,
                    "seconds": round(time.time() - started, 3),
                    "peak_gib": window.gib(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "host": socket.gethostname(),
                }
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return manifest, True

    def sweep(self) -> int:
        """Remove temporary folders left by dead processes on this machine (their key's lock
        is free and their pid is gone); returns how many."""
        removed = 0
        for tmp in self.root.glob(f"*/{TMP_PREFIX}*"):
            key, _, rest = tmp.name.removeprefix(TMP_PREFIX).partition("-")
            pid = rest.split("-", 1)[0]
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
            lock = tmp.parent / f".{key}.lock"
            with open(lock, "a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer holds the key
                try:
                    shutil.rmtree(tmp, ignore_errors=True)
                    removed += 1
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        return removed

    def entries(self) -> list[Path]:
        return sorted(p.parent for p in self.root.glob(f"*/*/{MANIFEST}"))
