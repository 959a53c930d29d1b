"""`mvbench report | export | import`: tables and figures from tracked runs, and runs moved
between stores."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from harness.cli.common import (
    complete_seeds_hint,
    context_flags,
    folder_size,
    load_plan,
    parse_overrides,
    selection_arguments,
    selection_flags,
    spec_arguments,
    store_folder,
    tracker_with_runs,
)
from harness.cli.search import cmd_search_report
from harness.tracking import ui_command
from mindvideo.errors import ConfigError


def default_out(plan) -> Path:
    """results/<suite>, or results/<suite>-<profile> when --profile swapped the spec's: a paper
    run's report never overwrites the committed tiny one."""
    spec = plan.spec
    swapped = spec.profile != spec.spec.profile
    return Path("results") / (f"{plan.suite}-{spec.profile}" if swapped else plan.suite)


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
    plan = load_plan(args)
    tracker = tracker_with_runs(args, plan)
    out = Path(args.out) if args.out else default_out(plan)
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
    flags = selection_flags(selection)
    context = context_flags(args)  # what makes the hinted commands find the same runs
    runs = f"{n} runs" + (f" of {picked}" if picked else "")
    print(f"report of {plan.suite} ({plan.spec.profile}, {runs}) written to {out}/:")
    for path in written:
        if path.parent == out or path.name.startswith(("table", "samples_grid")):
            print(f"  {path}")
    figures = [p for p in written if p.parent.name == "figures"]
    gifs = [p for p in written if p.suffix == ".gif"]
    print(f"  + {len(figures)} figures in {out / 'figures'}, {len(gifs)} GIFs in {out / 'samples'}")
    print(f"the runs in MLflow's UI: {ui_command(tracker.uri)} (experiment {plan.suite})")
    if found.missing:
        print(
            f"warning: {len(found.missing)} of {len(plan.runs)} planned runs have not finished "
            f"and are missing from the tables (e.g. {found.missing[0].label}); "
            f"run: mvbench run {plan.spec.path}{context}{flags}"
            + complete_seeds_hint(
                plan,
                found,
                context
                + (f" --out {shlex.quote(args.out)}" if args.out else "")
                + selection_flags({k: v for k, v in selection.items() if k != "seed"}),
            ),
            file=sys.stderr,
        )
    if (out / "table.md").exists():
        print()
        print((out / "table.md").read_text().split("\n## Per subject")[0].rstrip())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from harness.transfer import export_runs

    plan = load_plan(args)
    tracker = tracker_with_runs(args, plan)
    out = Path(args.out)
    exported, missing = export_runs(plan, tracker, out, list(args.set or []), args.artifacts)
    size = folder_size(out) / 2**20
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

    tracker = Tracker(store_folder(args))
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
    plan = build_plan(load_spec(done.spec, done.profile), parse_overrides(done.overrides))
    planned = {run.key for run in plan.runs}
    stray = [k for k in [*done.added, *done.present] if k not in planned]
    if stray:
        print(
            f"warning: {len(stray)} of the imported runs are not runs of {done.spec} as this "
            "checkout plans it (its config or the stages' code changed since the export): "
            f"`mvbench report {done.spec}{options}` will not show them",
            file=sys.stderr,
        )


def add_parsers(sub) -> None:
    """This group's commands, on the top-level subparsers."""
    rep = sub.add_parser(
        "report", help="tables, figures and samples of a suite's finished runs (read from MLflow)"
    )
    spec_arguments(rep, what="either")
    selection_arguments(rep)
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
    spec_arguments(ex)
    selection_arguments(ex)
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
