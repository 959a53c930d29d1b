"""`mvbench search`: Optuna searches, their reports and status."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from harness.cli.common import (
    parse_overrides,
    quiet_command,
    spec_arguments,
    store_folder,
    terminate,
)
from mindvideo.errors import ConfigError


def cmd_search(args: argparse.Namespace) -> int:
    from harness.runner import check_threads
    from harness.search.trials import SearchOptions, run_search

    if args.dashboard:
        return serve_dashboard(args)

    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials {args.trials}: give 1 or more")
    check_threads(args.threads)
    options = SearchOptions(
        spec=args.spec,
        store=str(store_folder(args)),
        profile=args.profile,
        storage=args.storage,
        overrides=parse_overrides(args.set),
        trials=args.trials,
        workers=args.workers,
        executor=args.executor,
        slurm_local=args.slurm_local,
        quiet=args.quiet,
        device=args.device,
        threads=args.threads,
        allow_test_objective=args.allow_test_objective,
    )
    # SIGTERM stops like Ctrl-C: the running trial is marked FAIL and queued to run again.
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        result = run_search(options)
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts = result.counts
    done = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
    of = f"/{result.target}" if result.target is not None else ""
    print(
        f"study {result.study}: {done}{of} trials done ({counts.get('COMPLETE', 0)} complete, "
        f"{counts.get('PRUNED', 0)} pruned; {counts.get('FAIL', 0)} failed) in "
        f"{result.seconds:.1f} s; storage {result.storage}"
    )
    for best in result.best:
        values = ", ".join(f"{v:.4g}" for v in best["values"])
        params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        print(f"  best: trial {best['number']} ({values}) [{params}]")
    if result.stopped == "failures":
        print(
            f"  stopped: the study has {counts.get('FAIL', 0)} failed trials "
            "(search.max_failures); see their `error` in the report's table, fix the cause or "
            "raise max_failures, and run the same command to go on"
        )
    elif result.stopped == "workers died":
        print("  stopped short: workers died; run the same command to go on")
    spec_arg = str(args.spec)
    for flag in ("profile", "store"):
        if getattr(args, flag):
            spec_arg += f" --{flag} {getattr(args, flag)}"
    if args.storage:
        spec_arg += f" --storage {result.storage}"  # without its password
    print(f"Next: mvbench report {spec_arg}")
    return 0 if result.reached else 1


def serve_dashboard(args: argparse.Namespace) -> int:
    """optuna-dashboard on the study's storage (the journal under the store, or --storage),
    until Ctrl-C; runs no trial."""
    from harness.report.search import load_study
    from harness.search.spec import load_search_spec
    from harness.search.storage import open_storage, shown

    try:
        import optuna_dashboard
    except ImportError:
        raise ConfigError(
            "--dashboard needs optuna-dashboard: pip install -e '.[dashboard]' (or pip install "
            "optuna-dashboard)"
        ) from None
    loaded = load_search_spec(args.spec, args.profile)
    study = load_study(loaded, store_folder(args), args.storage)  # says so if it has none
    where = shown(args.storage) if args.storage else "the journal under the store"
    print(
        f"study {loaded.study} ({len(study.trials)} trials, {where}): optuna-dashboard at "
        f"http://{args.host}:{args.port}/dashboard (Ctrl-C stops it)",
        flush=True,
    )
    store = store_folder(args)
    storage = open_storage(args.storage, store, loaded.study, loaded.search.retries)
    optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    return 0


def cmd_search_report(args: argparse.Namespace) -> int:
    """`mvbench report SEARCH_SPEC`: the study's trials, read from its storage and MLflow."""
    from harness.report.search import write_search_report
    from harness.search.spec import load_search_spec
    from harness.tracking import Tracker

    loaded = load_search_spec(args.spec, args.profile)
    tracker = Tracker(store_folder(args))
    out = Path(args.out) if args.out else Path("results") / loaded.study
    written = write_search_report(loaded, store_folder(args), args.storage, tracker, out)
    print(f"report of study {loaded.study} written to {out}/:")
    for path in written:
        print(f"  {path}")
    if (out / "table.md").exists():
        print()
        print((out / "table.md").read_text().split("\n## All trials")[0].rstrip())
    return 0


def cmd_search_status(args: argparse.Namespace) -> int:
    """`mvbench status SEARCH_SPEC`: the study's trials, read from its storage."""
    from harness.report.search import load_study, status_lines
    from harness.search import storage as S
    from harness.search.spec import load_search_spec

    loaded = load_search_spec(args.spec, args.profile)
    study = load_study(loaded, store_folder(args), args.storage)
    where = (
        S.shown(args.storage) if args.storage else S.journal_path(store_folder(args), loaded.study)
    )
    print(f"storage {where}")
    for line in status_lines(study, loaded, store_folder(args), S.is_database(args.storage)):
        print(line)
    return 0


def add_parsers(sub) -> None:
    """This group's commands, on the top-level subparsers."""
    se = sub.add_parser(
        "search",
        help="an Optuna search (experiments/search/*.yaml): each trial runs the spec's runs "
        "with the trial's values, sharing cached stages; continues a started study",
    )
    spec_arguments(se, what="search")
    se.add_argument(
        "--trials", type=int, metavar="N", help="finish N trials in all (replaces search.n_trials)"
    )
    se.add_argument(
        "--executor",
        choices=("local", "pool", "slurm"),
        help="local: one worker in this process (the default); pool: --workers processes on "
        "this machine (the default when --workers > 1); slurm: --workers cluster jobs "
        "(submitit, the profile's resources: per job), all sharing the study's storage and the "
        "store, which must then be on a shared file system",
    )
    se.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="workers sharing the study: pool processes (default one per GPU, else per core) "
        "or slurm jobs (default resources.slurm_array_parallelism)",
    )
    se.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads of each worker: this process (local), each pool process "
        "(default cores / workers) or each slurm job (default resources.cpus_per_job)",
    )
    se.add_argument(
        "--slurm-local",
        action="store_true",
        help="slurm: run the jobs with submitit's local executor, as processes on this machine",
    )
    se.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage for workers on several machines, e.g. "
        "postgresql://user:password@host:5432/db (default: <store>/optuna/<study>.log)",
    )
    se.add_argument("--device", help="torch device for the stages (default: cuda if available)")
    se.add_argument(
        "--dashboard",
        action="store_true",
        help="run no trial: serve optuna-dashboard on the study's storage (the journal under "
        "--store, or --storage) at --host:--port until Ctrl-C (pip install -e '.[dashboard]')",
    )
    se.add_argument("--host", default="127.0.0.1", help="--dashboard's address (127.0.0.1)")
    se.add_argument("--port", type=int, default=8080, help="--dashboard's port (8080)")
    se.add_argument(
        "--allow-test-objective",
        action="store_true",
        help="let the objective (or prune_on) be scored on the test split (eval.split: test, or "
        "a stage's test metric); by default trials score the validation split (eval.split: "
        "val) and a test objective is refused, since tuning on test biases its scores",
    )
    quiet_command(se, cmd_search, "no progress bars or trial lines")
