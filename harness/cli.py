"""The mvbench command line."""

from __future__ import annotations

import argparse
import json
import os
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
    from mindvideo.data.synth.simulate import simulate, work_units

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
    out = Path(args.out or data.root or default_store() / "data" / profile.profile)
    cfg = data.synth
    meta_path = out / "dataset.json"
    if meta_path.exists() and not args.overwrite:
        try:
            existing = json.loads(meta_path.read_text()).get("config")
        except json.JSONDecodeError:
            existing = None
        if existing == cfg.model_dump(mode="json"):
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "store", None) is not None:
        os.environ["MVBENCH_STORE"] = str(args.store)
    try:
        return int(args.func(args) or 0)
    except MindVideoError as e:
        print(f"mvbench: error: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:
        print(f"mvbench: error: invalid configuration:\n{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mvbench: interrupted; nothing half-written was kept", file=sys.stderr)
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
