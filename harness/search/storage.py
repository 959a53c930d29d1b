"""The study's Optuna storage: a journal file under the store, or a database across machines.

A trial whose worker died would stay RUNNING for ever. Two mechanisms find such trials, mark
them FAIL (with the reason in the trial's `error` user attribute) and queue a retry with the
same parameters (Optuna's RetryHeartbeatStaleTrialCallback, up to `search.retries` times):
  - journal storage: the worker holds a lease on each trial it runs (harness.lease, under
    <store>/optuna/<study>.trials/), renewed by a heartbeat and judged on the file system's
    clock. A trial whose lease is gone or stale (its worker died on this host, or stopped
    beating on any host sharing the store, as slurm jobs do) is failed;
  - database storage (PostgreSQL): a worker on the same host that no longer exists is dead at
    once, and Optuna's own heartbeats fail a trial on another machine whose heartbeat stopped
    for `GRACE_S` seconds (the machines need not share a file system).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

from harness.cache import file_lock
from harness.lease import RunLease
from harness.tracking import this_worker, worker_alive
from mindvideo.errors import ConfigError

JOURNAL_DIR = "optuna"
HEARTBEAT_S = 10  # database storage: a running trial's heartbeat period
GRACE_S = 60  # ... and how long without one before the trial counts as dead
JOURNAL_LOCK_GRACE_S = 30  # a journal write lock older than this was left by a killed process
WORKER_ATTR = "worker"  # trial user attribute: host:pid:start of the process running it
ERROR_ATTR = "error"  # trial user attribute: why a trial failed


def journal_path(store: Path, study: str) -> Path:
    return Path(store) / JOURNAL_DIR / f"{study}.log"


def _trial_lease(store: Path, study: str, trial_id: int, number: int | str = "?") -> RunLease:
    folder = Path(store) / JOURNAL_DIR / f"{study}.trials"
    return RunLease(folder, f"trial-{trial_id}", timeout_s=GRACE_S, label=f"trial {number}")


def trial_lease(storage, store: Path, study: str, trial) -> RunLease | None:
    """The lease a worker holds while it runs `trial` (journal storage; None for a database,
    whose trials have Optuna heartbeats). Acquire it under study_lock, right after claim."""
    if is_database_storage(storage):
        return None
    return _trial_lease(store, study, trial._trial_id, trial.number)


def shown(url: str) -> str:
    """A storage URL for messages, without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def is_database(url: str | None) -> bool:
    return url is not None and url.split(":", 1)[0].split("+")[0] in ("postgresql", "mysql")


def open_storage(url: str | None, store: Path, study: str, retries: int):
    """The Optuna storage of a study: `url` (postgresql://user:pass@host/db) or, by default,
    the journal file <store>/optuna/<study>.log."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import (
        JournalFileBackend,
        JournalFileSymlinkLock,
        JournalStorage,
    )

    if url is None:
        path = journal_path(store, study)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The symlink lock works for the processes of one machine (and on NFS); one left by a
        # killed writer is broken after JOURNAL_LOCK_GRACE_S.
        lock = JournalFileSymlinkLock(str(path), grace_period=JOURNAL_LOCK_GRACE_S)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    if not is_database(url):
        raise ConfigError(
            f"--storage {shown(url)}: give a database URL (postgresql://user:password@host:port/"
            "database), or leave --storage out for the journal file under the store"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=retries, inherit_intermediate_values=False
                ),
            )
        except ImportError:  # SQLAlchemy's postgresql:// driver is psycopg (3)
            raise ConfigError(
                f"--storage {shown(url)}: the database driver is not installed; "
                "pip install 'psycopg[binary]' (PostgreSQL)"
            ) from None
        except Exception as e:
            raise ConfigError(
                f"--storage {shown(url)}: cannot open the database: {type(e).__name__}: "
                f"{str(e).splitlines()[0][:300]}. Check that the server runs and the URL "
                "(user, password, host, port, database) is right"
            ) from None


def has_heartbeat(storage) -> bool:
    from optuna.storages import RDBStorage

    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


@contextlib.contextmanager
def heartbeat(storage, trial) -> Iterator[None]:
    """Record the running trial's heartbeat every HEARTBEAT_S seconds (database storage), as
    study.optimize would: the search runs trials with ask and tell, to count them exactly."""
    if not has_heartbeat(storage):
        yield
        return
    trial_id = trial._trial_id  # Optuna's storage key of the trial
    storage.record_heartbeat(trial_id)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(storage.get_heartbeat_interval()):
            storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def study_lock(storage, store: Path, study: str) -> Iterator[None]:
    """One worker at a time counts the study's trials and asks for the next one, so the study
    reaches exactly its trial count: a PostgreSQL advisory lock for database storage (workers
    on several machines), else a file lock beside the journal."""
    from optuna.storages import RDBStorage

    if isinstance(storage, RDBStorage) and storage.engine.dialect.name == "postgresql":
        from sqlalchemy import text

        key = int.from_bytes(hashlib.sha256(f"mvbench:{study}".encode()).digest()[:8], "big")
        key -= 1 << 63  # a signed 64-bit key
        with storage.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    with file_lock(Path(store) / JOURNAL_DIR / f".{study}.lock"):
        yield


def claim(trial) -> None:
    """Record the worker running a trial (checked by reap_dead_workers). A retry arrives with
    its failed trial's user attributes: the failure's reason is cleared."""
    trial.set_user_attr(WORKER_ATTR, this_worker())
    if trial.user_attrs.get(ERROR_ATTR):
        trial.set_user_attr(ERROR_ATTR, "")


def fail_and_retry(study, frozen, reason: str, retries: int) -> bool:
    """Mark a RUNNING trial FAIL with `reason` and queue a retry with its parameters (up to
    `retries` retries of the original trial); False if it had finished meanwhile."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    storage = study._storage  # the trial belongs to another (dead) process: no Trial handle
    try:
        storage.set_trial_user_attr(frozen._trial_id, ERROR_ATTR, reason)
        if not storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=retries)
        retry(study, storage.get_trial(frozen._trial_id))
    return True


def reap_dead_workers(study, storage, retries: int, store: Path) -> list[int]:
    """Fail (and retry) the RUNNING trials whose worker is gone: on journal storage (under
    `store`) those whose trial lease is missing or stale; on database storage those whose
    worker process on this host is gone, or whose Optuna heartbeat stopped. Returns the failed
    trial numbers. Call it under study_lock (a trial is asked, claimed and leased under it, so
    a RUNNING trial without a lease has lost its worker)."""
    import optuna
    from optuna.trial import TrialState

    database = is_database_storage(storage)
    reaped = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = frozen.user_attrs.get(WORKER_ATTR)
        if not database:
            holder = _trial_lease(store, study.study_name, frozen._trial_id).holder()
            if holder is not None and not holder.stale:
                continue
            if holder is None:
                reason = f"worker died ({worker or 'before claiming the trial'}; no lease left)"
            elif worker_alive(holder.worker) is False:
                reason = f"worker died ({holder.worker})"
            else:
                reason = (
                    f"worker died or hung ({holder.worker}: no heartbeat for "
                    f"{holder.age_s:.0f} s, on the file system's clock)"
                )
        else:
            # No worker recorded: another machine may run it (left to the heartbeat).
            if not worker or worker_alive(worker) is not False:
                continue
            reason = f"worker died ({worker})"
        if fail_and_retry(study, frozen, reason, retries):
            reaped.append(frozen.number)
    if has_heartbeat(storage):
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        after = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        reaped += [t.number for t in after if t.number not in before]
    return reaped


def is_database_storage(storage) -> bool:
    from optuna.storages import RDBStorage

    return isinstance(storage, RDBStorage)
