"""`mvbench run | plan | status`: a suite's runs, what is cached, what is left."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from harness.cli.common import (
    context_flags,
    load_plan,
    quiet_command,
    selection_arguments,
    spec_arguments,
    store_folder,
    terminate,
)
from harness.status import cache_state, compute_estimate
from harness.tracking import ui_command
from mindvideo.errors import ConfigError


def cmd_run(args: argparse.Namespace) -> int:
    from harness.launchers import check_options, default_lease_timeout, make_runner
    from harness.tracking import Tracker

    if args.processes < 1:
        raise ConfigError(f"--processes {args.processes}: give 1 or more training processes")
    if args.lease_timeout is None:
        args.lease_timeout = default_lease_timeout()
    check_options(
        args.executor,
        args.workers,
        args.slurm_local,
        args.processes,
        args.device,
        args.lease_timeout,
        args.threads,
    )
    plan = load_plan(args)
    store = store_folder(args)
    tracker = Tracker(store)  # created (or found unreachable) before any work starts
    cached = cache_state(plan, store)
    n_cached = sum(cached.values())
    if not args.quiet:
        print(
            f"suite {plan.suite} ({plan.spec.profile}): {len(plan.runs)} runs, "
            f"{len(plan.nodes)} distinct stages ({n_cached} cached); tracking {tracker.uri}",
            file=sys.stderr,
        )
    runner = make_runner(
        args.executor,
        plan,
        store,
        tracker,
        workers=args.workers,
        slurm_local=args.slurm_local,
        fail_fast=args.fail_fast,
        quiet=args.quiet,
        device=args.device,
        processes=args.processes,
        lease_timeout=args.lease_timeout,
        threads=args.threads,
    )
    if args.executor != "local" and not args.quiet:
        print(f"executor {args.executor}: {runner.launcher.describe()}", file=sys.stderr)
    # SIGTERM (a scheduler's time limit, `kill`) stops like Ctrl-C: the run is marked KILLED.
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        result = runner.execute()
    finally:
        signal.signal(signal.SIGTERM, previous)
    parts = [
        f"{result.count('FINISHED')} finished",
        f"{result.count('DONE_BEFORE')} already done",
        f"{result.count('FAILED')} failed",
    ]
    if result.count("BUSY"):
        parts.append(f"{result.count('BUSY')} running in another live process (skipped)")
    if result.count("NOT_RUN"):
        parts.append(f"{result.count('NOT_RUN')} not run (--fail-fast)")
    if result.count("KILLED"):
        parts.append(f"{result.count('KILLED')} taken over by another worker (lease lost)")
    print(f"suite {plan.suite}: {', '.join(parts)} in {result.seconds:.1f} s")
    for o in result.failed:
        print(f"  FAILED {o.run.label}: {o.error}")
    if result.failed:
        print(
            "  (details: the run's error.txt artifact in MLflow; the other runs are kept, and "
            "running the same command again retries only the failed runs)"
        )
    print(f"Next: mvbench report {plan.spec.path}{context_flags(args)}")
    if tracker.local:
        print(f"      {ui_command(tracker.uri)}")
    else:
        print(f"      open {tracker.uri} in a browser (the MLflow UI)")
    return 1 if result.failed else 0


def cmd_plan(args: argparse.Namespace) -> int:
    specs: list[str] = []
    for spec in [args.spec, *(args.more or [])]:  # each suite once
        if all(Path(spec).resolve() != Path(s).resolve() for s in specs):
            specs.append(spec)
    # every spec is loaded before anything is printed: a bad one stops the command first
    plans = [load_plan(argparse.Namespace(**{**vars(args), "spec": s})) for s in specs]
    nodes: dict = {}
    runs = 0
    for plan in plans:
        if len(specs) > 1:
            print()
        _print_plan(plan, store_folder(args))
        nodes.update(plan.nodes)
        runs += len(plan.runs)
    if len(specs) > 1:
        from types import SimpleNamespace

        union = SimpleNamespace(nodes=nodes)
        cached = cache_state(union, store_folder(args))
        print(
            f"\nall {len(specs)} suites: {runs} runs share {len(nodes)} distinct stages; "
            f"{len(nodes) - sum(cached.values())} to compute"
        )
        print(compute_estimate(union, store_folder(args), cached))
    return 0


def _print_plan(plan, store: Path) -> None:
    cached = cache_state(plan, store)
    names: list[str] = []  # in pipeline order: a stage first met in a later run goes before
    for run in plan.runs:  # the next stage it precedes there (baselines before evaluate)
        order = [plan.node(key).name for key in run.stages]
        for i, name in enumerate(order):
            if name not in names:
                later = [names.index(n) for n in order[i + 1 :] if n in names]
                names.insert(min(later, default=len(names)), name)
    header = ["variant", "subject", "seed", *names]
    rows = []
    for run in plan.runs:
        state = {plan.node(k).name: ("cached" if cached[k] else "to run") for k in run.stages}
        rows.append(
            [run.variant.name, run.subject, str(run.seed), *(state.get(n, "-") for n in names)]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"suite {plan.suite}, profile {plan.spec.profile} ({plan.spec.path})")
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    n_cached = sum(cached.values())
    by_stage: dict[str, list[int]] = {name: [0, 0] for name in names}
    for key, node in plan.nodes.items():
        counts = by_stage.setdefault(node.name, [0, 0])
        counts[0] += 1
        counts[1] += cached[key]
    detail = ", ".join(f"{name} {n} ({c} cached)" for name, (n, c) in by_stage.items())
    print(
        f"{len(plan.runs)} runs share {len(plan.nodes)} distinct stages: {detail}; "
        f"{len(plan.nodes) - n_cached} to compute"
    )
    print(compute_estimate(plan, store, cached))
    for line in sample_lines(plan):
        print(line)


def sample_lines(plan) -> list[str]:
    """Real data: the samples each subject's runs pair (from the runs' headers), with the
    window settings that give them, so a count can be checked against a paper's before any
    work (the paper's CC2017: 4,320 training and 1,200 test samples per subject)."""
    from mindvideo.data.paired import PairingConfig, pairing, sample_counts
    from mindvideo.errors import DataError

    lines, seen = [], set()
    for run in plan.runs:
        data = run.profile.data
        if data.source == "synth" or data.root is None or not Path(data.root).is_dir():
            continue
        cfg = PairingConfig(**pairing(data, run.subject))
        if cfg in seen:
            continue
        seen.add(cfg)
        try:
            counts = sample_counts(Path(data.root), cfg)
        except DataError as e:
            lines.append(f"samples of {run.subject}: cannot count ({e})")
            continue
        said = ", ".join(f"{split} {n:,}" for split, n in counts.items())
        lines.append(
            f"samples of {run.subject}: {said} (window {cfg.window} from {cfg.window_offset} "
            f"TRs after the clip, edge {cfg.window_edge})"
        )
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    from harness.search.spec import is_search_spec
    from harness.status import experiment_summaries, run_states
    from harness.tracking import Tracker, default_uri, tracking_uri

    store = store_folder(args)
    if (args.variant or args.subject or args.seed) and (not args.spec or is_search_spec(args.spec)):
        raise ConfigError(
            "--variant, --subject and --seed select runs of a suite: give its spec, e.g. "
            "mvbench status experiments/suites/paper_ablations.yaml --seed 2"
        )
    if args.spec and is_search_spec(args.spec):
        from harness.cli.search import cmd_search_status

        return cmd_search_status(args)
    plan = load_plan(args) if args.spec else None
    uri = tracking_uri(store)
    if uri == default_uri(store) and not (store / "mlflow.db").exists():
        print(f"no tracking store yet at {store / 'mlflow.db'} (nothing has run with this store)")
        return 0
    tracker = Tracker(store)
    if plan is None:
        print(f"tracking {tracker.uri}")
        for name, desc in experiment_summaries(tracker):
            print(f"  {name}: {desc}")
        return 0
    header = ["variant", "subject", "seed", "status", "stages cached", "note"]
    rows = run_states(plan, store, tracker)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"suite {plan.suite}, profile {plan.spec.profile}; tracking {tracker.uri}")
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    finished = sum(r[3] == "FINISHED" for r in rows)
    seeds: dict[str, list[int]] = {}
    for r in rows:
        counts = seeds.setdefault(r[2], [0, 0])
        counts[0] += r[3] == "FINISHED"
        counts[1] += 1
    by_seed = ""
    if len(seeds) > 1 and finished < len(rows):  # which seeds a report could show alone
        by_seed = " (by seed: " + ", ".join(f"{s} {d}/{n}" for s, (d, n) in seeds.items()) + ")"
    print(f"{finished}/{len(rows)} runs finished{by_seed}")
    return 0


def add_parsers(sub) -> None:
    """This group's commands, on the top-level subparsers."""
    run = sub.add_parser(
        "run",
        help="run a suite: every (variant, subject, seed), each stage once, tracked in MLflow",
    )
    spec_arguments(run)
    selection_arguments(run)
    run.add_argument(
        "--fail-fast", action="store_true", help="stop at the first failed run (default: go on)"
    )
    run.add_argument("--device", help="torch device for the stages (default: cuda if available)")
    run.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="train the training stages (mbm, mbm_finetune, contrastive) in N processes under "
        "torch.distributed: gloo on CPU, one GPU each with nccl; same results as 1 (default: 1)",
    )
    run.add_argument(
        "--executor",
        choices=("local", "pool", "slurm"),
        default="local",
        help="local: the runs one after another in this process (default); pool: in worker "
        "processes on this machine (one per GPU, or per core); slurm: one cluster job per run "
        "(submitit), the profile's resources: section says what each job asks for",
    )
    run.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="pool: N worker processes (default: one per GPU, else one per core); worker i gets "
        "GPU i mod #GPUs, and cores/N torch threads",
    )
    run.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads for the stages: local, of this process (default: torch's, all "
        "cores); pool, of each worker (default: cores / workers); slurm, of each job (default: "
        "the profile's resources.cpus_per_job). CPU results repeat to the last digit only at "
        "the same count, so give the count a result was computed with (its runs' "
        "mvbench.torch_threads tag) to repeat it",
    )
    run.add_argument(
        "--slurm-local",
        action="store_true",
        help="slurm: run the jobs with submitit's local executor, as separate processes on this "
        "machine (to try the slurm path on a laptop, without a cluster)",
    )
    run.add_argument(
        "--lease-timeout",
        type=float,
        metavar="SECONDS",
        help="a run whose worker has not renewed its lease for this long (a dead or hung "
        "worker, on any machine) is marked KILLED and run again (default: "
        "$MVBENCH_LEASE_TIMEOUT or 60)",
    )
    quiet_command(run, cmd_run)

    pl = sub.add_parser("plan", help="dry run: the suite's runs and stages, cached or to run")
    spec_arguments(pl)
    pl.add_argument(
        "more",
        nargs="*",
        metavar="SPEC",
        help="more suite specs: each is planned, then what they share is counted once "
        "(e.g. the cold time of all experiments/suites/*.yaml)",
    )
    selection_arguments(pl)
    pl.set_defaults(func=cmd_plan)

    st = sub.add_parser(
        "status", help="runs of a suite (or all suites), or a search's trials, and their state"
    )
    spec_arguments(st, optional=True, what="either")
    selection_arguments(st)
    st.add_argument(
        "--storage", help="a search's Optuna storage, if `mvbench search` was given one"
    )
    st.set_defaults(func=cmd_status)
