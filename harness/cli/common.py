"""Helpers every command group shares: the store, overrides, progress bars, spec arguments."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from harness.profiles import parse_override
from mindvideo.errors import ConfigError


def default_store() -> Path:
    return Path(os.environ.get("MVBENCH_STORE", ".mvbench"))


def parse_overrides(pairs: list[str] | None) -> dict:
    return dict(parse_override(p) for p in pairs or [])


def progress_bar(total: int | None, desc: str, quiet: bool):
    """A tqdm bar on stderr and the (n, what) callback the library reports through."""
    from tqdm import tqdm

    bar = tqdm(
        total=total, desc=desc, unit="step", disable=quiet, file=sys.stderr, dynamic_ncols=True
    )

    def tick(n: int, what: str) -> None:
        bar.set_postfix_str(what, refresh=False)
        bar.update(n)

    return bar, tick


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def load_plan(args: argparse.Namespace):
    from harness.plan import build_plan
    from harness.search.spec import is_search_spec
    from harness.spec import load_spec

    if is_search_spec(args.spec):
        raise ConfigError(
            f"{args.spec}: a search spec (it has a `search:` section): run it with "
            f"`mvbench search {args.spec}`, report it with `mvbench report {args.spec}`"
        )
    spec = load_spec(args.spec, args.profile)
    plan = build_plan(spec, parse_overrides(args.set))
    picks = {k: getattr(args, k, None) for k in ("variant", "subject", "seed")}
    if any(picks.values()):
        from harness.plan import select_runs

        plan = select_runs(plan, picks["variant"], picks["subject"], picks["seed"])
    return plan


def store_folder(args: argparse.Namespace) -> Path:
    return Path(args.store) if args.store else default_store()


def tracker_with_runs(args: argparse.Namespace, plan):
    """The store's tracker for commands that only read runs (report, export): a missing
    default database is an error, not a new empty store left behind."""
    from harness.tracking import Tracker, default_uri, tracking_uri

    store = store_folder(args)
    if tracking_uri(store) == default_uri(store) and not (store / "mlflow.db").exists():
        raise ConfigError(
            f"no tracking store at {store / 'mlflow.db'}: nothing has run with this store; run "
            f"the suite first (mvbench run {plan.spec.path}{context_flags(args)}), or point "
            "--store, $MVBENCH_STORE or $MLFLOW_TRACKING_URI at the store that has its runs"
        )
    return Tracker(store)


def terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def context_flags(args: argparse.Namespace) -> str:
    """The --profile, --store and --set options of this command, for a command it suggests."""
    flags = ""
    if getattr(args, "profile", None):
        flags += f" --profile {shlex.quote(args.profile)}"
    if getattr(args, "store", None):
        flags += f" --store {shlex.quote(args.store)}"
    for value in getattr(args, "set", None) or []:
        flags += f" --set {shlex.quote(value)}"
    return flags


def selection_flags(selection: dict) -> str:
    """--variant / --subject / --seed options from {name: values}."""
    return "".join(f" --{k} {value}" for k, v in selection.items() for value in v)


def complete_seeds_hint(plan, found, options: str = "") -> str:
    """With some seeds finished and others not, how to report the finished ones alone (a table
    whose variants average different numbers of seeds is hard to read); `options` are the
    report's own, but for --seed."""
    missing = {run.seed for run in found.missing}
    complete = sorted({run.seed for run in plan.runs} - missing)
    if not complete or not missing:
        return ""
    seeds = selection_flags({"seed": complete})
    return (
        "; or report the seeds that are complete alone: "
        f"mvbench report {plan.spec.path}{options}{seeds}"
    )


def quiet_command(p: argparse.ArgumentParser, func, help: str = "no progress bars", **defaults):
    """A command's last arguments: its --quiet flag and the function `main` calls."""
    p.add_argument("--quiet", action="store_true", help=help)
    p.set_defaults(func=func, **defaults)


def spec_arguments(p: argparse.ArgumentParser, optional: bool = False, what: str = "suite") -> None:
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
    set_argument(p, "override a profile value for every run, e.g. data.synth.protocol.subjects=1")


def selection_arguments(p: argparse.ArgumentParser) -> None:
    """Part of a suite: its runs of some variants, subjects or seeds (repeatable)."""
    p.add_argument("--variant", action="append", help="only this variant (repeatable)")
    p.add_argument("--subject", action="append", help="only this subject (repeatable)")
    p.add_argument("--seed", action="append", type=int, help="only this seed (repeatable)")


def set_argument(p: argparse.ArgumentParser, help: str) -> None:
    """--set KEY=VALUE (repeatable): a dotted profile override (parse_overrides reads them)."""
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=help)
