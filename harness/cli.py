"""The mvbench command line."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from harness.profiles import available_profiles, load_profile, parse_override
from mindvideo import __version__
from mindvideo.errors import ConfigError, MindVideoError


def default_store() -> Path:
    return Path(os.environ.get("MVBENCH_STORE", ".mvbench"))


def _overrides(pairs: list[str] | None) -> dict:
    return dict(parse_override(p) for p in pairs or [])


def _progress_bar(total: int, desc: str, quiet: bool):
    """A tqdm bar on stderr and the (n, what) callback the library reports through."""
    from tqdm import tqdm

    bar = tqdm(
        total=total, desc=desc, unit="step", disable=quiet, file=sys.stderr, dynamic_ncols=True
    )

    def tick(n: int, what: str) -> None:
        bar.set_postfix_str(what, refresh=False)
        bar.update(n)

    return bar, tick


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cmd_data_simulate(args: argparse.Namespace) -> int:
    from mindvideo.data.synth.simulate import config_record, simulate, work_units

    overrides = _overrides(args.set)
    if args.seed is not None:
        overrides["data.synth.seed"] = args.seed
    profile = load_profile(args.profile, overrides)
    data = profile.data
    if data.source != "synth" or data.synth is None:
        raise ConfigError(
            f"profile {profile.profile!r} reads real data (data.source: {data.source}); there is "
            "nothing to simulate. Use a synthetic profile: "
            + ", ".join(p for p in available_profiles() if p != profile.profile)
        )
    store = Path(args.store) if args.store else default_store()
    out = Path(args.out or data.root or store / "data" / profile.profile)
    cfg = data.synth
    meta_path = out / "dataset.json"
    if meta_path.exists() and not args.overwrite:
        try:
            existing = json.loads(meta_path.read_text()).get("config")
        except json.JSONDecodeError:
            existing = None
        if existing == config_record(cfg):
            print(
                f"{out}: already simulated with this config; nothing to do "
                "(--overwrite to write it again)"
            )
            return 0
        raise ConfigError(
            f"{out}: holds a dataset simulated with a different config; choose another --out "
            "or pass --overwrite to replace it"
        )
    start = time.perf_counter()
    bar, tick = _progress_bar(work_units(cfg), f"simulate {profile.profile}", args.quiet)
    try:
        summary = simulate(
            cfg, out, tick, overwrite=args.overwrite, extra={"profile": profile.profile}
        )
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    size = _folder_size(out) / 2**20
    print(
        f"SynthCC ({profile.profile}) written to {out} in {seconds:.1f} s, {size:.0f} MiB: "
        f"{len(summary['subjects'])} subjects, {len(summary['segments']['train'])} training "
        f"and {len(summary['segments']['test'])} test segments, "
        f"{len(summary['corpus']['subjects'])} corpus subjects.\n"
        f"Next: mvbench data inspect {out}"
    )
    return 0


def _inspect_settings(args: argparse.Namespace, root: Path):
    """Preprocessing and window settings: --profile, else the dataset's own, else defaults."""
    from mindvideo.data.cc2017 import read_metadata, resolve_root
    from mindvideo.data.config import DataConfig

    name = args.profile
    if name is None:
        recorded = read_metadata(resolve_root(root)).get("profile")
        if recorded in available_profiles():
            name = recorded
    if name is not None:
        return load_profile(name, _overrides(args.set)).data
    if args.set:
        raise ConfigError("--set needs --profile (the config the overrides apply to)")
    return DataConfig(source="cc2017")


def _print_report(report: dict) -> None:
    print(
        f"{report['dataset']} at {report['root']}  (TR {report['tr']} s, "
        f"window {report['window']['size']} at offset {report['window']['offset']})"
    )
    if "stimuli" in report:
        s = report["stimuli"]
        print(f"stimuli: {s['fps']:g} fps, {s['frames_per_tr']} frames per TR")
        if s.get("segments_without_npy_frames"):
            print(
                "  no stimuli/<segment>.npy frames for: "
                + ", ".join(s["segments_without_npy_frames"])
                + " (convert the movies to uint8 (F, H, W, 3) .npy for the pipeline)"
            )
    if "corpus" in report:
        c = report["corpus"]
        print(
            f"corpus: {c['subjects']} subjects x {c['runs_per_subject']} runs x "
            f"{c['trs_per_run']} TRs"
        )
    cols = [
        "subject",
        "voxels",
        "train seg x rep",
        "test seg x rep",
        "samples tr/te",
        "selected",
        "recall",
        "fpr",
        "ceiling",
        "lag peak/true",
    ]
    rows = []
    for name, e in report["subjects"].items():
        tr, te = e["train"], e["test"]

        def fmt(v, spec=".3f"):
            return "-" if v is None else format(v, spec)

        rows.append(
            [
                name,
                str(e["cortical_voxels"]),
                f"{tr['segments']} x {'/'.join(map(str, tr['repeats']))}",
                f"{te['segments']} x {'/'.join(map(str, te['repeats']))}",
                f"{tr['samples']}/{te['samples']}",
                str(e.get("selected_voxels", "-")),
                fmt(e.get("roi_recall")),
                fmt(e.get("roi_false_positive_rate")),
                fmt(e.get("noise_ceiling")),
                f"{e.get('lag_peak_tr', '-')}/{e.get('true_lag_tr', '-')}",
            ]
        )
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    if "checks" in report:
        failed = [c for c in report["checks"] if not c["passed"]]
        if failed:
            print("benchmark validation FAILED:")
            for c in failed:
                print(f"  {c['subject']}: {c['name']} = {c['value']} (needs {c['threshold']})")
        else:
            print(
                f"benchmark validation passed ({len(report['checks'])} checks: roi recall, "
                "false positives, lag)"
            )


def _print_flat(report: dict) -> None:
    print(f"{report['dataset']} at {report['root']}")
    for key, value in report.items():
        if key in ("dataset", "root", "format", "subjects") and not isinstance(value, int):
            continue
        print(f"  {key}: {value}")
    if isinstance(report.get("subjects"), dict):
        for name, entry in report["subjects"].items():
            for split, info in entry.items():
                desc = ", ".join(f"{k} {v}" for k, v in info.items())
                print(f"  {name} {split}: {desc}")


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from mindvideo.data.cc2017 import list_subjects
    from mindvideo.data.inspect import detect_format, inspect_corpus, inspect_dataset, inspect_npy

    root = Path(args.dir)
    kind = detect_format(root)
    if kind != "cc2017":
        report = inspect_npy(root) if kind == "mindvideo_npy" else inspect_corpus(root)
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            _print_flat(report)
        return 0
    data = _inspect_settings(args, root)
    bar, tick = _progress_bar(len(list_subjects(root)), "inspect", args.quiet or args.json)
    try:
        report = inspect_dataset(
            root,
            data.preprocess,
            data.window,
            data.window_offset,
            data.window_edge,
            validate=not args.no_validate,
            progress=tick,
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_report(report)
    if args.check and not report.get("valid", True):
        return 1
    return 0


def cmd_data_export(args: argparse.Namespace) -> int:
    from harness.score import export_clips

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: folder exists and is not empty; choose another --out")
    n = export_clips(Path(args.dir), args.split, out, args.format, args.frames)
    print(f"{n} {args.split} clips ({args.frames} frames each, {args.format}) written to {out}")
    return 0


def _dataset_profile(dataset: Path | None, name: str | None = None):
    """The profile a dataset was simulated with (or the one named), if it can be found."""
    from mindvideo.data.cc2017 import read_metadata

    if name is None and dataset is not None:
        recorded = read_metadata(dataset).get("profile")
        name = recorded if recorded in available_profiles() else None
    return load_profile(name) if name else None


def _scorers(args: argparse.Namespace, dataset: Path | None, quiet: bool):
    """Judges and CLIP: given on the command line, else the SynthCC dataset's (trained once,
    with the sizes of the dataset's profile, `eval.judges` and `eval.clip`)."""
    from harness.profiles import typed_section
    from mindvideo.eval.judges import (
        JudgeConfig,
        load_judge,
        load_synth_judges,
        train_synth_judges,
    )
    from mindvideo.eval.judges import work_units as judge_units
    from mindvideo.eval.protocols import Scorers
    from mindvideo.models.clip import ClipConfig, load_clip, train_domain_clip
    from mindvideo.models.clip import work_units as clip_units

    frame = load_judge(Path(args.frame_judge), "frame") if args.frame_judge else None
    video = load_judge(Path(args.video_judge), "video") if args.video_judge else None
    clip = load_clip(Path(args.clip), args.clip_model) if args.clip else None
    if dataset is None:
        return Scorers(frame_judge=frame, video_judge=video, clip=clip)
    profile = _dataset_profile(dataset, getattr(args, "profile", None))
    if frame is None or video is None:
        cfg = typed_section(profile, "eval.judges", JudgeConfig) if profile else JudgeConfig()
        print(f"SynthCC judges: {dataset / 'judges'} (trained once, then cached)", file=sys.stderr)
        bar, tick = _progress_bar(judge_units(cfg), "judges", quiet)
        try:
            train_synth_judges(dataset, cfg, progress=tick)
        finally:
            bar.close()
        synth_frame, synth_video = load_synth_judges(dataset)
        frame = frame or synth_frame
        video = video or synth_video
    if clip is None:
        cfg = typed_section(profile, "eval.clip", ClipConfig) if profile else ClipConfig()
        print(f"SynthCC CLIP: {dataset / 'clip'} (trained once, then cached)", file=sys.stderr)
        bar, tick = _progress_bar(clip_units(cfg), "clip", quiet)
        try:
            train_domain_clip(dataset, cfg, progress=tick)
        finally:
            bar.close()
        clip = load_clip(dataset / "clip")
    return Scorers(frame_judge=frame, video_judge=video, clip=clip)


def cmd_score(args: argparse.Namespace) -> int:
    from harness.score import format_report, is_dataset, load_pair
    from mindvideo.eval.protocols import get_protocol, score

    protocol = get_protocol(
        args.protocol,
        args.extra_metrics,
        n_frames=args.frames,
        size=args.size,
        trials=args.trials,
        exclude_scene_cuts=True if args.exclude_scene_cuts else None,
    )
    pred_dir, truth_dir = Path(args.pred), Path(args.truth)
    names, pred, truth = load_pair(pred_dir, truth_dir, protocol.n_frames)
    dataset = truth_dir if is_dataset(truth_dir) else truth.dataset
    scorers = _scorers(args, dataset, args.quiet or args.json)
    report = score(pred, truth.clips, protocol, scorers, truth.scene_cut, seed=args.seed)
    result = report.to_json() | {"pred": str(pred_dir), "truth": str(truth_dir), "seed": args.seed}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_report(report))
    return 0


def cmd_baselines(args: argparse.Namespace) -> int:
    from mindvideo.data.cc2017 import list_subjects
    from mindvideo.data.paired import pairing
    from mindvideo.stages.baselines import BaselinesConfig, run_baselines

    root = Path(args.dir)
    data = _inspect_settings(args, root)
    subjects = args.subjects or list_subjects(root)
    scorers = _scorers(args, root, args.quiet or args.json)
    out = Path(args.out) if args.out else None
    rows: dict[str, dict[str, dict[str, float]]] = {}
    bar, tick = _progress_bar(None, "baselines", args.quiet or args.json)
    try:
        for subject in subjects:
            cfg = BaselinesConfig(
                **pairing(data, subject), methods=tuple(args.methods), top_k=args.top_k
            )
            rows[subject] = run_baselines(
                root, cfg, scorers, args.seed, out / subject if out else None, tick
            )
    finally:
        bar.close()
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(rows, indent=1))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    shown = [
        "video_2way_top1",
        "video_2way_top1_strict",
        "video_50way_top1",
        "frame_2way_top1",
        "frame_2way_top1_strict",
        "frame_50way_top1",
        "ssim",
        "psnr",
    ]
    header = ["subject", "baseline"] + shown
    table = [header]
    for subject, methods in rows.items():
        for method, m in methods.items():
            cells = [subject, method]
            for k in shown:
                if k not in m:
                    cells.append("-")
                elif f"{k}_se" in m:
                    cells.append(f"{m[k]:.3f}+-{m[k + '_se']:.3f}")
                else:
                    cells.append(f"{m[k]:.3f}")
            table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0


def _load_plan(args: argparse.Namespace):
    from harness.plan import build_plan
    from harness.search.spec import is_search_spec
    from harness.spec import load_spec

    if is_search_spec(args.spec):
        raise ConfigError(
            f"{args.spec}: a search spec (it has a `search:` section): run it with "
            f"`mvbench search {args.spec}`, report it with `mvbench report {args.spec}`"
        )
    spec = load_spec(args.spec, args.profile)
    plan = build_plan(spec, _overrides(args.set))
    picks = {k: getattr(args, k, None) for k in ("variant", "subject", "seed")}
    if any(picks.values()):
        from harness.plan import select_runs

        plan = select_runs(plan, picks["variant"], picks["subject"], picks["seed"])
    return plan


def _store(args: argparse.Namespace) -> Path:
    return Path(args.store) if args.store else default_store()


def _tracker_with_runs(args: argparse.Namespace, plan):
    """The store's tracker for commands that only read runs (report, export): a missing
    default database is an error, not a new empty store left behind."""
    from harness.tracking import Tracker, default_uri, tracking_uri

    store = _store(args)
    if tracking_uri(store) == default_uri(store) and not (store / "mlflow.db").exists():
        raise ConfigError(
            f"no tracking store at {store / 'mlflow.db'}: nothing has run with this store; run "
            f"the suite first (mvbench run {plan.spec.path}{_context_flags(args)}), or point "
            "--store, $MVBENCH_STORE or $MLFLOW_TRACKING_URI at the store that has its runs"
        )
    return Tracker(store)


def _cache_state(plan, store: Path) -> dict[str, bool]:
    """Which of the plan's stage keys are already in the cache."""
    from harness.cache import StageCache

    cache = StageCache(store)
    return {key: cache.manifest(node) is not None for key, node in plan.nodes.items()}


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    from harness.executors import check_options, default_lease_timeout, make_executor
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
    plan = _load_plan(args)
    store = _store(args)
    tracker = Tracker(store)  # created (or found unreachable) before any work starts
    cached = _cache_state(plan, store)
    n_cached = sum(cached.values())
    if not args.quiet:
        print(
            f"suite {plan.suite} ({plan.spec.profile}): {len(plan.runs)} runs, "
            f"{len(plan.nodes)} distinct stages ({n_cached} cached); tracking {tracker.uri}",
            file=sys.stderr,
        )
    executor = make_executor(
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
        print(f"executor {args.executor}: {executor.describe()}", file=sys.stderr)
    # SIGTERM (a scheduler's time limit, `kill`) stops like Ctrl-C: the run is marked KILLED.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = executor.execute()
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
    print(f"Next: mvbench report {plan.spec.path}{_context_flags(args)}")
    if tracker.local:
        print(f"      mlflow ui --backend-store-uri {tracker.uri}")
    else:
        print(f"      open {tracker.uri} in a browser (the MLflow UI)")
    return 1 if result.failed else 0


def cmd_plan(args: argparse.Namespace) -> int:
    specs: list[str] = []
    for spec in [args.spec, *(args.more or [])]:  # each suite once
        if all(Path(spec).resolve() != Path(s).resolve() for s in specs):
            specs.append(spec)
    # every spec is loaded before anything is printed: a bad one stops the command first
    plans = [_load_plan(argparse.Namespace(**{**vars(args), "spec": s})) for s in specs]
    nodes: dict = {}
    runs = 0
    for plan in plans:
        if len(specs) > 1:
            print()
        _print_plan(plan, _store(args))
        nodes.update(plan.nodes)
        runs += len(plan.runs)
    if len(specs) > 1:
        from types import SimpleNamespace

        union = SimpleNamespace(nodes=nodes)
        cached = _cache_state(union, _store(args))
        print(
            f"\nall {len(specs)} suites: {runs} runs share {len(nodes)} distinct stages; "
            f"{len(nodes) - sum(cached.values())} to compute"
        )
        print(_compute_estimate(union, _store(args), cached))
    return 0


def _print_plan(plan, store: Path) -> None:
    cached = _cache_state(plan, store)
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
    print(_compute_estimate(plan, store, cached))


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{seconds:.0f} s" if seconds < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


def _compute_estimate(plan, store: Path, cached: dict[str, bool]) -> str:
    """What the plan's stages cost: the recorded time of the cached ones, and for the others
    the median recorded time of finished stages of the same kind in the store (a rough guide:
    the same kind of stage costs more with other settings)."""
    import json

    from harness.cache import MANIFEST, StageCache

    cache = StageCache(store)
    done = 0.0
    for key, node in plan.nodes.items():
        if cached[key] and node.external is None:
            done += float((cache.manifest(node) or {}).get("seconds", 0.0))
    pending: dict[str, int] = {}
    for key, node in plan.nodes.items():
        if not cached[key]:
            pending[node.name] = pending.get(node.name, 0) + 1
    estimate, unknown = 0.0, []
    for name, count in pending.items():
        times = []
        for path in sorted((cache.root / name).glob(f"*/{MANIFEST}"))[:200]:
            try:
                times.append(float(json.loads(path.read_text()).get("seconds", 0.0)))
            except (OSError, ValueError):
                continue
        if times:  # the median: a stage slowed by other work on the cores does not count much
            estimate += count * statistics.median(times)
        else:
            unknown.append(name)
    n_cached = sum(cached.values())
    text = "compute: " + (
        f"the {n_cached} cached stages took {_duration(done)}" if n_cached else "nothing cached"
    )
    if not pending:
        return text
    n_pending = sum(pending.values())
    if len(unknown) == len(pending):  # a fresh store: nothing to average
        return (
            f"{text}; the {n_pending} to compute: no estimate yet (this store has no finished "
            f"stage of these kinds; results/README.md gives the times measured for the committed "
            f"suites)"
        )
    known = n_pending - sum(pending[name] for name in unknown)
    text += (
        f"; the {n_pending} to compute: about {_duration(estimate)}"
        + (f" for the {known} of kinds timed here" if unknown else "")
        + " (the median time of finished stages of each kind in this store"
        + (f"; none yet for {', '.join(unknown)}, not counted" if unknown else "")
        + ")"
    )
    return text


def _context_flags(args: argparse.Namespace) -> str:
    """The --profile, --store and --set options of this command, for a command it suggests."""
    flags = ""
    if getattr(args, "profile", None):
        flags += f" --profile {shlex.quote(args.profile)}"
    if getattr(args, "store", None):
        flags += f" --store {shlex.quote(args.store)}"
    for value in getattr(args, "set", None) or []:
        flags += f" --set {shlex.quote(value)}"
    return flags


def _selection_flags(selection: dict) -> str:
    """--variant / --subject / --seed options from {name: values}."""
    return "".join(f" --{k} {value}" for k, v in selection.items() for value in v)


def _complete_seeds_hint(plan, found, options: str = "") -> str:
    """With some seeds finished and others not, how to report the finished ones alone (a table
    whose variants average different numbers of seeds is hard to read); `options` are the
    report's own, but for --seed."""
    missing = {run.seed for run in found.missing}
    complete = sorted({run.seed for run in plan.runs} - missing)
    if not complete or not missing:
        return ""
    seeds = _selection_flags({"seed": complete})
    return (
        "; or report the seeds that are complete alone: "
        f"mvbench report {plan.spec.path}{options}{seeds}"
    )


def cmd_search(args: argparse.Namespace) -> int:
    from harness.execute import check_threads
    from harness.search.trials import SearchOptions, run_search

    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials {args.trials}: give 1 or more")
    check_threads(args.threads)
    options = SearchOptions(
        spec=args.spec,
        store=str(_store(args)),
        profile=args.profile,
        storage=args.storage,
        overrides=_overrides(args.set),
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
    previous = signal.signal(signal.SIGTERM, _terminate)
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


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.build import write_report
    from harness.search.spec import is_search_spec

    if is_search_spec(args.spec):
        if args.variant or args.subject or args.seed:
            raise ConfigError(
                f"{args.spec}: --variant, --subject and --seed select runs of a suite; a search "
                "report shows every trial of the study"
            )
        return cmd_search_report(args)
    plan = _load_plan(args)
    tracker = _tracker_with_runs(args, plan)
    out = Path(args.out) if args.out else Path("results") / plan.suite
    reference = getattr(args, "reference", None)
    if reference is not None:
        names = list(dict.fromkeys(r.variant.name for r in plan.runs))
        if reference not in names:
            raise ConfigError(
                f"--reference {reference}: not a variant of {plan.spec.path} as planned "
                f"({', '.join(names)})"
            )
    written, found = write_report(plan, tracker, out, reference)
    n = len(found.runs)
    selection = {k: v for k in ("variant", "subject", "seed") if (v := getattr(args, k, None))}
    picked = ", ".join(f"{k} {' '.join(map(str, v))}" for k, v in selection.items())
    flags = _selection_flags(selection)
    context = _context_flags(args)  # what makes the hinted commands find the same runs
    runs = f"{n} runs" + (f" of {picked}" if picked else "")
    print(f"report of {plan.suite} ({plan.spec.profile}, {runs}) written to {out}/:")
    for path in written:
        if path.parent == out or path.name.startswith(("table", "samples_grid")):
            print(f"  {path}")
    figures = [p for p in written if p.parent.name == "figures"]
    gifs = [p for p in written if p.suffix == ".gif"]
    print(f"  + {len(figures)} figures in {out / 'figures'}, {len(gifs)} GIFs in {out / 'samples'}")
    if found.missing:
        print(
            f"warning: {len(found.missing)} of {len(plan.runs)} planned runs have not finished "
            f"and are missing from the tables (e.g. {found.missing[0].label}); "
            f"run: mvbench run {plan.spec.path}{context}{flags}"
            + _complete_seeds_hint(
                plan,
                found,
                context
                + (f" --out {shlex.quote(args.out)}" if args.out else "")
                + _selection_flags({k: v for k, v in selection.items() if k != "seed"}),
            ),
            file=sys.stderr,
        )
    if (out / "table.md").exists():
        print()
        print((out / "table.md").read_text().split("\n## Per subject")[0].rstrip())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from harness.transfer import export_runs

    plan = _load_plan(args)
    tracker = _tracker_with_runs(args, plan)
    out = Path(args.out)
    exported, missing = export_runs(plan, tracker, out, list(args.set or []), args.artifacts)
    size = _folder_size(out) / 2**20
    print(
        f"exported {len(exported)} finished runs of {plan.suite} ({plan.spec.profile}) from "
        f"{tracker.uri} to {out}/ ({size:.1f} MiB in the folder)"
    )
    if missing:
        print(
            f"warning: {len(missing)} of {len(plan.runs)} planned runs have not finished and "
            f"were not exported (e.g. {missing[0]})",
            file=sys.stderr,
        )
    print(f"Next (on another machine or store): mvbench import {shlex.quote(str(out))}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from harness.tracking import Tracker
    from harness.transfer import import_runs

    tracker = Tracker(_store(args))
    done = import_runs(tracker, Path(args.folder))
    print(
        f"imported {len(done.added)} runs of {done.suite} ({done.profile}) into {tracker.uri}; "
        f"{len(done.present)} were there already"
    )
    options = "".join(f" --set {shlex.quote(o)}" for o in done.overrides)
    if args.store:
        options += f" --store {shlex.quote(args.store)}"
    _check_imported_keys(args, done, options)
    print(f"Next: mvbench report {done.spec}{options}")
    return 0


def _check_imported_keys(args: argparse.Namespace, done, options: str) -> None:
    """Warn when imported runs are not runs of the spec as this checkout plans it (another
    config or stage version gives other run keys, which `mvbench report` does not show)."""
    from harness.plan import build_plan
    from harness.spec import load_spec

    if not Path(done.spec).exists():
        print(
            f"note: the spec {done.spec} is not here; report the runs with the same spec and "
            f"profile ({done.profile})",
            file=sys.stderr,
        )
        return
    plan = build_plan(load_spec(done.spec, done.profile), _overrides(done.overrides))
    planned = {run.key for run in plan.runs}
    stray = [k for k in [*done.added, *done.present] if k not in planned]
    if stray:
        print(
            f"warning: {len(stray)} of the imported runs are not runs of {done.spec} as this "
            "checkout plans it (its config or the stages' code changed since the export): "
            f"`mvbench report {done.spec}{options}` will not show them",
            file=sys.stderr,
        )


def cmd_search_report(args: argparse.Namespace) -> int:
    """`mvbench report SEARCH_SPEC`: the study's trials, read from its storage and MLflow."""
    from harness.report.search import write_search_report
    from harness.search.spec import load_search_spec
    from harness.tracking import Tracker

    loaded = load_search_spec(args.spec, args.profile)
    tracker = Tracker(_store(args))
    out = Path(args.out) if args.out else Path("results") / loaded.study
    written = write_search_report(loaded, _store(args), args.storage, tracker, out)
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
    study = load_study(loaded, _store(args), args.storage)
    where = S.shown(args.storage) if args.storage else S.journal_path(_store(args), loaded.study)
    print(f"storage {where}")
    for line in status_lines(study, loaded, _store(args), S.is_database(args.storage)):
        print(line)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from harness import tracking as T
    from harness.executors import default_lease_timeout
    from harness.lease import RunLease, store_id
    from harness.search.spec import is_search_spec
    from harness.tracking import Tracker, default_uri, tracking_uri
    from harness.transfer import IMPORTED_FROM

    store = _store(args)
    if (args.variant or args.subject or args.seed) and (not args.spec or is_search_spec(args.spec)):
        raise ConfigError(
            "--variant, --subject and --seed select runs of a suite: give its spec, e.g. "
            "mvbench status experiments/suites/paper_ablations.yaml --seed 2"
        )
    if args.spec and is_search_spec(args.spec):
        return cmd_search_status(args)
    plan = _load_plan(args) if args.spec else None
    uri = tracking_uri(store)
    if uri == default_uri(store) and not (store / "mlflow.db").exists():
        print(f"no tracking store yet at {store / 'mlflow.db'} (nothing has run with this store)")
        return 0
    tracker = Tracker(store)
    if args.spec is None:
        exps = tracker.client.search_experiments()
        print(f"tracking {tracker.uri}")
        for exp in exps:
            if exp.name == "Default":
                continue
            counts: dict[str, int] = {}
            for r in tracker.children(exp.experiment_id):
                status = r.info.status
                if status == "RUNNING" and T.worker_alive(r.data.tags.get(T.WORKER)) is False:
                    status = "RUNNING (worker died)"
                counts[status] = counts.get(status, 0) + 1
            desc = ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())) or "no runs"
            print(f"  {exp.name}: {desc}")
        return 0
    cached = _cache_state(plan, store)
    exp = tracker.experiment(plan.suite, create=False)
    latest: dict[str, object] = {}
    for r in tracker.children(exp) if exp else []:
        key = r.data.tags.get(T.RUN_KEY)
        if key not in latest or r.info.start_time > latest[key].info.start_time:
            latest[key] = r
    header = ["variant", "subject", "seed", "status", "stages cached", "note"]
    leased_here = store_id(store, create=False) or "none"
    rows = []
    for run in plan.runs:
        r = latest.get(run.key)
        status = r.info.status if r else "not run"
        note = ""
        alive = T.worker_alive(r.data.tags.get(T.WORKER)) if r is not None else None
        if status == "RUNNING" and alive is False:
            note = "worker died: runs again on the next `mvbench run`"
        elif status == "RUNNING" and r.data.tags.get(T.LEASE_STORE) == leased_here:
            holder = RunLease(store / "leases" / exp, run.key, default_lease_timeout()).holder()
            if holder is None or holder.stale:
                why = holder.stale if holder else "its lease is gone"
                note = f"{why}: runs again on the next `mvbench run`"
            else:
                note = holder.description
        elif status == "RUNNING" and alive is None:
            note = f"on another machine ({r.data.tags.get(T.WORKER, '?')})"
        elif r is not None and status == "FAILED":
            note = r.data.tags.get(T.ERROR, "")[:80]
        elif r is not None and r.data.tags.get(IMPORTED_FROM):
            note = f"imported from {r.data.tags[IMPORTED_FROM]}"
        n = sum(cached[k] for k in run.stages)
        rows.append(
            [run.variant.name, run.subject, str(run.seed), status, f"{n}/{len(run.stages)}", note]
        )
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


def _spec_arguments(
    p: argparse.ArgumentParser, optional: bool = False, what: str = "suite"
) -> None:
    examples = {
        "suite": "suite spec (.yaml), e.g. experiments/suites/baselines.yaml",
        "search": "search spec (.yaml), e.g. experiments/search/guidance.yaml",
        "either": "suite or search spec (.yaml), e.g. experiments/suites/baselines.yaml or "
        "experiments/search/guidance.yaml",
    }
    p.add_argument(
        "spec",
        nargs="?" if optional else None,
        help=examples[what] + (" (default: every suite in the store)" if optional else ""),
    )
    p.add_argument(
        "--profile",
        help=f"run the {'search' if what == 'search' else 'suite'} on this profile instead of "
        "the spec's (smoke, tiny, paper)",
    )
    p.add_argument(
        "--store",
        help="store folder: stage cache and MLflow database (default ./.mvbench or "
        "$MVBENCH_STORE; $MLFLOW_TRACKING_URI overrides the database)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a profile value for every run, e.g. data.synth.protocol.subjects=1",
    )


def _selection_arguments(p: argparse.ArgumentParser) -> None:
    """Part of a suite: its runs of some variants, subjects or seeds (repeatable)."""
    p.add_argument("--variant", action="append", help="only this variant (repeatable)")
    p.add_argument("--subject", action="append", help="only this subject (repeatable)")
    p.add_argument("--seed", action="append", type=int, help="only this seed (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mvbench", description="MinD-Video benchmark harness (fMRI-to-video decoding)."
    )
    parser.add_argument("--version", action="version", version=f"mvbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="simulate and inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)

    sim = data_sub.add_parser("simulate", help="write a SynthCC dataset in the CC2017 layout")
    sim.add_argument("profile", help="profile name (smoke, tiny) or a profile .yaml path")
    sim.add_argument("--out", help="output folder (default: <store>/data/<profile>)")
    sim.add_argument(
        "--store", type=Path, help="store folder (default ./.mvbench or $MVBENCH_STORE)"
    )
    sim.add_argument(
        "--seed", type=int, help="dataset seed (default: the profile's data.synth.seed)"
    )
    sim.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    sim.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a profile value, e.g. data.synth.protocol.subjects=2",
    )
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(func=cmd_data_simulate)

    ins = data_sub.add_parser("inspect", help="summarise (and validate) a CC2017-layout dataset")
    ins.add_argument("dir", help="dataset folder (holding subject*/ or video_fmri_dataset/)")
    ins.add_argument("--json", action="store_true", help="print the report as JSON")
    ins.add_argument(
        "--profile",
        help="take preprocessing and window settings from this "
        "profile (default: the dataset's own, else the paper's defaults)",
    )
    ins.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a profile value, e.g. data.window_offset=3",
    )
    ins.add_argument(
        "--no-validate",
        action="store_true",
        help="summarise only: skip voxel selection and the decoding checks",
    )
    ins.add_argument(
        "--check",
        action="store_true",
        help="exit with status 1 when a benchmark validation check fails",
    )
    ins.add_argument("--quiet", action="store_true", help="no progress bar")
    ins.set_defaults(func=cmd_data_inspect)

    exp = data_sub.add_parser("export", help="write a split's ground-truth clips as files")
    exp.add_argument("dir", help="SynthCC dataset folder")
    exp.add_argument(
        "--split", default="test", help="train, val (where simulated) or test (default test)"
    )
    exp.add_argument("--out", required=True, help="output folder")
    exp.add_argument("--format", choices=("npy", "gif", "png"), default="npy")
    exp.add_argument("--frames", type=int, default=6, help="frames per clip (default 6 = 3 fps)")
    exp.set_defaults(func=cmd_data_export)

    sc = sub.add_parser("score", help="score reconstructions against ground truth")
    sc.add_argument(
        "--pred",
        required=True,
        help="folder of predicted clips (.gif, .mp4, .npy, PNG frame folders, or one clips.npy)",
    )
    sc.add_argument(
        "--truth",
        required=True,
        help="folder of ground-truth clips named like "
        "the predictions, or a SynthCC dataset (predictions named <segment>_<clip>)",
    )
    sc.add_argument("--protocol", default="mindvideo", help="mindvideo or mind-animator")
    sc.add_argument(
        "--metric",
        action="append",
        default=[],
        dest="extra_metrics",
        help="also score this metric (repeatable), e.g. motion_direction, motion_speed",
    )
    sc.add_argument("--frames", type=int, help="frames per clip to score (protocol default 6)")
    sc.add_argument(
        "--size", type=int, help="resize frames to SIZE x SIZE (default: the ground truth's size)"
    )
    sc.add_argument("--trials", type=int, help="N-way trials per sample (default 100)")
    sc.add_argument(
        "--exclude-scene-cuts", action="store_true", help="leave out clips that span a scene cut"
    )
    sc.add_argument(
        "--seed", type=int, default=0, help="seed of the N-way trials and bootstrap (default 0)"
    )
    sc.add_argument(
        "--frame-judge",
        help="folder of a ViTForImageClassification (e.g. "
        "google/vit-base-patch16-224 saved locally)",
    )
    sc.add_argument("--video-judge", help="folder of a VideoMAEForVideoClassification")
    sc.add_argument("--clip", help="open_clip checkpoint file, or our CLIP folder")
    sc.add_argument("--clip-model", help="open_clip model name of --clip (e.g. ViT-B-32)")
    sc.add_argument("--json", action="store_true", help="print the result as JSON")
    sc.add_argument("--out", help="also write the JSON result to this file")
    sc.add_argument("--quiet", action="store_true", help="no progress bars")
    sc.set_defaults(func=cmd_score)

    bl = sub.add_parser(
        "baselines",
        help="decode a SynthCC dataset with the baselines "
        "(ridge retrieval, shuffled control, random training clips) and score them",
    )
    bl.add_argument("dir", help="SynthCC dataset folder")
    bl.add_argument(
        "--profile", help="preprocessing and window settings (default: the dataset's own profile)"
    )
    bl.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a profile value")
    bl.add_argument("--subjects", nargs="+", help="subjects (default: all)")
    bl.add_argument(
        "--methods",
        nargs="+",
        default=["ridge", "shuffled", "random-train-clip"],
        choices=["ridge", "shuffled", "random-train-clip"],
    )
    bl.add_argument(
        "--top-k",
        type=int,
        default=1,
        help="training clips averaged per reconstruction (default 1)",
    )
    bl.add_argument("--seed", type=int, default=0)
    bl.add_argument(
        "--out",
        help="write reconstructions (clips.npy per subject and "
        "baseline, sample GIFs) and metrics.json here",
    )
    bl.add_argument("--json", action="store_true")
    bl.add_argument("--quiet", action="store_true")
    bl.set_defaults(
        func=cmd_baselines, frame_judge=None, video_judge=None, clip=None, clip_model=None
    )

    run = sub.add_parser(
        "run",
        help="run a suite: every (variant, subject, seed), each stage once, tracked in MLflow",
    )
    _spec_arguments(run)
    _selection_arguments(run)
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
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=cmd_run)

    pl = sub.add_parser("plan", help="dry run: the suite's runs and stages, cached or to run")
    _spec_arguments(pl)
    pl.add_argument(
        "more",
        nargs="*",
        metavar="SPEC",
        help="more suite specs: each is planned, then what they share is counted once "
        "(e.g. the cold time of all experiments/suites/*.yaml)",
    )
    _selection_arguments(pl)
    pl.set_defaults(func=cmd_plan)

    rep = sub.add_parser(
        "report", help="tables, figures and samples of a suite's finished runs (read from MLflow)"
    )
    _spec_arguments(rep, what="either")
    _selection_arguments(rep)
    rep.add_argument("--out", help="output folder (default results/<suite>/)")
    rep.add_argument(
        "--reference",
        metavar="VARIANT",
        help="compare every row with this variant instead of the spec's reference (e.g. plain "
        "guidance against its adversarial twin); write it elsewhere with --out",
    )
    rep.add_argument(
        "--storage",
        help="a search spec's Optuna storage, if `mvbench search` was given one (default: the "
        "journal file under the store)",
    )
    rep.set_defaults(func=cmd_report)

    ex = sub.add_parser(
        "export",
        help="write a suite's finished runs (metrics, params, tags, artifacts) to a folder that "
        "`mvbench import` reads into another store",
    )
    _spec_arguments(ex)
    _selection_arguments(ex)
    ex.add_argument(
        "--out",
        required=True,
        help="folder to write (new, or an earlier export of the same suite: runs are added)",
    )
    ex.add_argument(
        "--artifacts",
        choices=("all", "report", "scores"),
        default="all",
        help="all: every artifact of each run; report: only what `mvbench report` reads (the "
        "scores, per-sample scores and sampled clips) and the config; scores: the same without "
        "the clips, so the report has no sample grid for these runs (default: all)",
    )
    ex.set_defaults(func=cmd_export)

    im = sub.add_parser(
        "import",
        help="log runs written by `mvbench export` into this store: `mvbench run` then skips "
        "them and `mvbench report` shows them",
    )
    im.add_argument("folder", help="a folder written by `mvbench export SPEC --out FOLDER`")
    im.add_argument(
        "--store",
        help="store folder to import into (default ./.mvbench or $MVBENCH_STORE; "
        "$MLFLOW_TRACKING_URI overrides the database)",
    )
    im.set_defaults(func=cmd_import)

    se = sub.add_parser(
        "search",
        help="an Optuna search (experiments/search/*.yaml): each trial runs the spec's runs "
        "with the trial's values, sharing cached stages; continues a started study",
    )
    _spec_arguments(se, what="search")
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
        "--allow-test-objective",
        action="store_true",
        help="let the objective (or prune_on) be scored on the test split (eval.split: test, or "
        "a stage's test metric); by default trials score the validation split (eval.split: "
        "val) and a test objective is refused, since tuning on test biases its scores",
    )
    se.add_argument("--quiet", action="store_true", help="no progress bars or trial lines")
    se.set_defaults(func=cmd_search)

    st = sub.add_parser(
        "status", help="runs of a suite (or all suites), or a search's trials, and their state"
    )
    _spec_arguments(st, optional=True, what="either")
    _selection_arguments(st)
    st.add_argument(
        "--storage", help="a search's Optuna storage, if `mvbench search` was given one"
    )
    st.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if (
        extra
        and getattr(args, "func", None) is cmd_plan
        and not any(a.startswith("-") for a in extra)
    ):
        args.more = [*(args.more or []), *extra]  # specs given after an option
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except MindVideoError as e:
        print(f"mvbench: error: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:
        print(f"mvbench: error: invalid configuration:\n{e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(
            "mvbench: interrupted; nothing half-written was kept (finished runs and stages "
            "are; the interrupted run is marked KILLED: run the same command to resume)",
            file=sys.stderr,
        )
        return 130
    except Exception as e:
        if os.environ.get("MVBENCH_DEBUG"):
            raise
        print(
            f"mvbench: unexpected error: {type(e).__name__}: {e}\n"
            "(set MVBENCH_DEBUG=1 to see the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
