"""The mvbench command line: a module per command group (data, score, suites, results,
search); this one builds the parser and turns errors into messages."""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from harness.cli import data, results, score, search, suites
from harness.cli.suites import cmd_plan
from mindvideo import __version__
from mindvideo.errors import MindVideoError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mvbench", description="MinD-Video benchmark harness (fMRI-to-video decoding)."
    )
    parser.add_argument("--version", action="version", version=f"mvbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    for group in (data, score, suites, results, search):
        group.add_parsers(sub)
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
