"""MLflow tracking: one experiment per suite, a parent run per execution, a child per run."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mindvideo import __version__
from mindvideo.errors import ConfigError

# Tags the harness writes (and searches by).
KIND = "mvbench.kind"  # "execution" (parent) or "run" (child)
RUN_KEY = "mvbench.run_key"
STAGE_KEYS = "mvbench.stage_keys"
SPEC_HASH = "mvbench.spec_hash"
GIT_COMMIT = "mvbench.git_commit"
WORKER = "mvbench.worker"  # host:pid:start-time of the process running it
VARIANT = "mvbench.variant"
BASE = "mvbench.base"
VARIANT_KIND = "mvbench.variant_kind"
SUBJECT = "mvbench.subject"
SEED = "mvbench.seed"
GRID = "mvbench.grid"  # JSON of the grid point
PROFILE = "mvbench.profile"
ERROR = "mvbench.error"
FAILED_STAGE = "mvbench.failed_stage"
LEASE_STORE = "mvbench.lease_store"  # the store whose leases/ holds the run's lease
STALE = "mvbench.stale"  # why a run left RUNNING was marked KILLED
DEVICES = "mvbench.devices"  # the torch devices its stages were computed on ("cpu", "cuda")
THREADS = "mvbench.torch_threads"  # torch's CPU thread counts its stages were computed with
PARENT = "mlflow.parentRunId"
DESCRIPTION = "mlflow.note.content"  # a run's or experiment's description in the MLflow UI
# The UI's view of an experiment: model training (runs, metrics, charts), not the GenAI one.
EXPERIMENT_KIND = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"

MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 5000


def ui_command(uri: str) -> str:
    """How to look at a tracking store's runs in MLflow's UI."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}"


def default_uri(store: Path) -> str:
    return f"sqlite:///{(Path(store) / 'mlflow.db').resolve()}"


def tracking_uri(store: Path) -> str:
    """MLFLOW_TRACKING_URI if set, else the SQLite file under the store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri(store)


@functools.cache
def git_commit() -> str:
    """The commit of the checkout the package runs from ("unknown" outside git)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first); [] if unreadable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _process_start(pid: int) -> str:
    """The start time of a process (Linux /proc), to tell a live pid from a reused one."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else "?"


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def worker_alive(worker: str | None) -> bool | None:
    """True/False for a worker on this host; None when it ran elsewhere (cannot tell)."""
    if not worker:
        return False
    try:
        host, pid, start = worker.rsplit(":", 2)
    except ValueError:
        return False
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat(int(pid))
    if fields and fields[0] in ("Z", "X"):
        return False  # exited, not yet reaped by its parent: it runs nothing any more
    return (fields[19] if len(fields) > 19 else "?") == start


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """{"data.window": "2", ...}: every leaf of a nested mapping as a string."""
    out: dict[str, str] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out |= flatten(v, f"{prefix}{k}.")
        return out
    value = json.dumps(tree) if isinstance(tree, list | tuple) else str(tree)
    out[prefix.rstrip(".")] = value[:MAX_PARAM_CHARS]
    return out


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


# A new SQLite store's schema: MLflow builds it by replaying its migrations (about 1.6 s on
# 2 cores, most of a smoke suite's harness overhead); the first store this machine creates
# under an MLflow version leaves a copy of its empty database here, and later new stores start
# from that copy (milliseconds). MVBENCH_SCHEMA_CACHE=off: always let MLflow build it.
SCHEMA_CACHE_ENV = "MVBENCH_SCHEMA_CACHE"


def schema_template() -> Path | None:
    """Where the empty database of this MLflow version is kept (None: the cache is off)."""
    setting = os.environ.get(SCHEMA_CACHE_ENV, "")
    if setting.lower() in ("off", "0", "no", "false"):
        return None
    from mlflow.version import VERSION

    base = Path(setting) if setting else None
    if base is None:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "mvbench" / "mlflow-schema"
    return base / f"mlflow-{VERSION}.db"


def copy_schema_template(db: Path) -> bool:
    """Start the new SQLite database `db` from the cached empty one; False when there is none
    (or `db` appeared meanwhile). Never overwrites: the copy is linked into place only if no
    file is there, so a store another process has just created is left alone."""
    template = schema_template()
    if template is None or not template.is_file():
        return False
    import shutil
    import sqlite3

    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(template, tmp)
        # What MLflow would have written for its Default experiment in this process.
        with contextlib.closing(sqlite3.connect(tmp)) as con, con:
            now = int(time.time() * 1000)
            con.execute(
                "UPDATE experiments SET artifact_location = ?, creation_time = ?, "
                "last_update_time = ? WHERE experiment_id = 0",
                (os.path.abspath("mlruns") + "/0", now, now),
            )
        os.link(tmp, db)
        return True
    except (OSError, sqlite3.Error):
        return False  # no cache: MLflow builds the schema as usual
    finally:
        tmp.unlink(missing_ok=True)


def save_schema_template(db: Path) -> None:
    """Keep a copy of the database MLflow has just built (no runs in it yet) for later stores."""
    template = schema_template()
    if template is None or template.is_file():
        return
    import shutil
    import sqlite3

    tmp = template.with_name(f".{template.name}.{os.getpid()}.tmp")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(db, tmp)
        with contextlib.closing(sqlite3.connect(tmp)) as con:
            (experiments,) = con.execute("SELECT count(*) FROM experiments").fetchone()
            (runs,) = con.execute("SELECT count(*) FROM runs").fetchone()
        if experiments == 1 and runs == 0:  # as built: another process has not written yet
            os.replace(tmp, template)
    except (OSError, sqlite3.Error):
        pass  # a read-only home: every store builds its own schema
    finally:
        tmp.unlink(missing_ok=True)


class Tracker:
    """The harness's view of an MLflow tracking store."""

    def __init__(self, store: Path, uri: str | None = None):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        # The store's schema set-up logs at INFO on every first use; keep the console for ours.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.store = Path(store)
        self.uri = uri or tracking_uri(self.store)
        self._check_and_create()
        db = (
            Path(self.uri.removeprefix("sqlite:///")) if self.uri.startswith("sqlite:///") else None
        )
        built = db is not None and not db.exists() and not copy_schema_template(db)
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        self._artifact_uris: dict[str, str] = {}  # run id -> artifact URI, for runs we created

        try:
            self.client.search_experiments(max_results=1)
        except Exception as e:
            raise ConfigError(
                f"MLflow tracking store {self.uri} is not usable: {type(e).__name__}: "
                f"{str(e)[:300]}. Fix MLFLOW_TRACKING_URI, or unset it to use "
                f"{default_uri(self.store)}"
            ) from None
        if built:
            save_schema_template(db)

    @property
    def local(self) -> bool:
        return self.uri.startswith(("sqlite:", "file:")) or "://" not in self.uri

    def _check_and_create(self) -> None:
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            return
        if self.uri.startswith(("http://", "https://")):
            # Fail in seconds, not after MLflow's minutes of retries.
            try:
                with urllib.request.urlopen(f"{self.uri.rstrip('/')}/health", timeout=5) as r:
                    r.read()
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", e)
                raise ConfigError(
                    f"MLflow tracking server {self.uri} (MLFLOW_TRACKING_URI) is unreachable: "
                    f"{reason}. Start it (mlflow server --host ... --port ...), fix the URI, or "
                    f"unset MLFLOW_TRACKING_URI to use {default_uri(self.store)}"
                ) from None

    # Experiments and runs ---------------------------------------------------------------

    def experiment(self, suite: str, create: bool = True) -> str | None:
        """The id of the suite's experiment (created on first use when `create`)."""
        exp = self.client.get_experiment_by_name(suite)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise ConfigError(
                    f"MLflow experiment {suite!r} is deleted; restore it "
                    f"(mlflow experiments restore) or give the suite another name"
                )
            if EXPERIMENT_KIND not in exp.tags:  # made before the harness set it
                self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, TRAINING_KIND)
            return exp.experiment_id
        if not create:
            return None
        location = None
        if self.local:
            location = (self.store / "artifacts").resolve().as_uri()
        try:
            tags = {"mvbench.suite": suite, EXPERIMENT_KIND: TRAINING_KIND}
            return self.client.create_experiment(suite, artifact_location=location, tags=tags)
        except Exception:
            exp = self.client.get_experiment_by_name(suite)  # created concurrently
            if exp is None:
                raise
            return exp.experiment_id

    def runs(self, experiment_id: str, filter_string: str = "") -> list:
        """Every run of the experiment matching the filter (all pages)."""
        out, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
            )
            out.extend(page)
            token = page.token
            if not token:
                return out

    def children(self, experiment_id: str, status: str | None = None) -> list:
        f = f"tags.`{KIND}` = 'run'"
        if status:
            f += f" and attributes.status = '{status}'"
        return self.runs(experiment_id, f)

    def latest_finished(self, experiment_id: str) -> dict[str, Any]:
        """Run key -> the latest FINISHED child of that key (the one reports read)."""
        latest: dict[str, Any] = {}
        for r in self.children(experiment_id, "FINISHED"):
            key = r.data.tags.get(RUN_KEY)
            if key not in latest or r.info.end_time > latest[key].info.end_time:
                latest[key] = r
        return latest

    def reap_stale(self, experiment_id: str) -> list:
        """Mark runs left RUNNING by a dead process on this host as KILLED; returns them.
        (The fast path: runs of other hosts go stale through their lease, harness.lease.)"""
        reaped = []
        for run in self.runs(experiment_id, "attributes.status = 'RUNNING'"):
            if worker_alive(run.data.tags.get(WORKER)) is False:
                self.mark_stale(run.info.run_id, "worker died")
                reaped.append(run)
        return reaped

    def mark_stale(self, run_id: str, reason: str) -> None:
        """End a run left RUNNING by a worker that is gone: KILLED, with the reason."""
        self.client.set_tag(run_id, STALE, reason[:MAX_TAG_CHARS])
        self.client.set_terminated(run_id, "KILLED")

    def runs_of_key(self, experiment_id: str, run_key: str) -> list:
        """The child runs of one run key (every status)."""
        return self.runs(experiment_id, f"tags.`{KIND}` = 'run' and tags.`{RUN_KEY}` = '{run_key}'")

    def start_parent(
        self, experiment_id: str, tags: dict[str, str], what: str = "execution"
    ) -> str:
        name = f"{what} {time.strftime('%Y-%m-%d %H:%M:%S')}"
        return self.create_run(experiment_id, name, "execution", tags).info.run_id

    def create_run(self, experiment_id: str, name: str, kind: str, tags: dict[str, str]):
        """A new RUNNING run of `kind` (the mvbench.kind tag) stamped with this worker and the
        code's commit; `tags` come after those and may override them."""
        stamp = {KIND: kind, WORKER: this_worker(), GIT_COMMIT: git_commit()}
        return self.client.create_run(experiment_id, run_name=name, tags={**stamp, **tags})

    def start_child(
        self,
        experiment_id: str,
        parent_id: str,
        name: str,
        tags: dict[str, str],
    ) -> str:
        tags = {PARENT: parent_id, "mvbench.version": __version__, **tags}
        run = self.create_run(experiment_id, name, "run", tags)
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri
        return run.info.run_id

    # Logging ----------------------------------------------------------------------------

    def log_metrics(
        self,
        run_id: str,
        metrics: Iterable[tuple[str, float, int]],
        params: dict[str, str] | None = None,
    ) -> None:
        """Metrics (name, value, step), and params if given, in as few writes as MLflow allows
        (1,000 metrics and 100 params per batch): each write costs about as much as its rows."""
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        values = [Metric(k, float(v), now, int(step)) for k, v, step in metrics]
        settings = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in (params or {}).items()]
        value_chunks = list(_chunks(values, 1000))
        setting_chunks = list(_chunks(settings, 100))
        for i in range(max(len(value_chunks), len(setting_chunks))):
            batch_values = value_chunks[i] if i < len(value_chunks) else []
            batch_settings = setting_chunks[i] if i < len(setting_chunks) else []
            self.client.log_batch(run_id, metrics=batch_values, params=batch_settings)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:MAX_TAG_CHARS]) for k, v in tags.items()]
        for chunk in _chunks(items, 100):
            self.client.log_batch(run_id, tags=chunk)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
        uri = self._artifact_uris.get(run_id)
        if uri is None:
            self.client.log_artifacts(run_id, str(folder), artifact_path)
            return
        # The artifact location is known from create_run: skip MLflow's get_run to look it up.
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        repo = get_artifact_repository(uri, tracking_uri=self.uri)
        repo.log_artifacts(str(folder), artifact_path)

    def end(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def download(self, run_id: str, path: str, dst: Path) -> Path | None:
        """An artifact of a run copied under dst, or None if the run has none by that path."""
        dst.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self.client.download_artifacts(run_id, path, str(dst)))
        except Exception:
            return None
