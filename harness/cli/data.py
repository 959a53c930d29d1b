"""`mvbench data simulate | prepare | inspect | export`: datasets."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from harness.cli.common import (
    default_store,
    folder_size,
    parse_overrides,
    progress_bar,
    quiet_command,
    set_argument,
)
from harness.profiles import available_profiles, load_profile
from mindvideo.errors import ConfigError


def cmd_data_simulate(args: argparse.Namespace) -> int:
    from mindvideo.data.synth.simulate import config_record, simulate, work_units

    overrides = parse_overrides(args.set)
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
    bar, tick = progress_bar(work_units(cfg), f"simulate {profile.profile}", args.quiet)
    try:
        summary = simulate(
            cfg, out, tick, overwrite=args.overwrite, extra={"profile": profile.profile}
        )
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    size = folder_size(out) / 2**20
    print(
        f"SynthCC ({profile.profile}) written to {out} in {seconds:.1f} s, {size:.0f} MiB: "
        f"{len(summary['subjects'])} subjects, {len(summary['segments']['train'])} training "
        f"and {len(summary['segments']['test'])} test segments, "
        f"{len(summary['corpus']['subjects'])} corpus subjects.\n"
        f"Next: mvbench data inspect {out}"
    )
    return 0


def inspect_settings(args: argparse.Namespace, root: Path):
    """Preprocessing and window settings: --profile, else the dataset's own, else defaults."""
    from mindvideo.data.cc2017 import holds_preprocessed, read_metadata, resolve_root
    from mindvideo.data.config import DataConfig

    # MinD-Video's converted arrays are read as it read them (their source's window offset)
    source = "mindvideo_npy" if holds_preprocessed(root) else "cc2017"
    name = args.profile
    if name is None:
        recorded = read_metadata(resolve_root(root)).get("profile")
        if recorded in available_profiles():
            name = recorded
    if name is not None:
        data = load_profile(name, parse_overrides(args.set)).data
        if data.source != "synth" and data.source != source:
            data = load_profile(name, parse_overrides(args.set) | {"data.source": source}).data
        return data
    if args.set:
        raise ConfigError(
            f"--set {args.set[0]}: {root} records no profile of this project, so there is "
            "nothing to override; give --profile (e.g. --profile paper) with --set"
        )
    return DataConfig(source=source)


def _print_report(report: dict) -> None:
    print(
        f"{report['dataset']} at {report['root']}  (TR {report['tr']} s, "
        f"window {report['window']['size']} at offset {report['window']['offset']})"
    )
    if "preprocessed" in report:
        print(f"runs: {report['preprocessed']}")
    if "stimuli" in report:
        s = report["stimuli"]
        print(f"stimuli: {s['fps']:g} fps, {s['frames_per_tr']} frames per TR")
        if s.get("segments_without_npy_frames"):
            print(
                "  no stimuli/<segment>.npy frames for: "
                + ", ".join(s["segments_without_npy_frames"])
                + " (convert the movies to uint8 (F, H, W, 3) .npy for the pipeline)"
            )
    if "motion" in report and "speed" in report["motion"]:
        m = report["motion"]
        px, sp = m["px_per_scored_frame"], m["speed"]
        print(
            f"motion ({m['motion']}): speed {sp['min']:.3f}-{sp['max']:.3f} frame widths/s "
            f"(configured {m['configured_speed_range'][0]:g}-{m['configured_speed_range'][1]:g}); "
            f"per scored frame {px['p5']:.1f} / {px['median']:.1f} / {px['p95']:.1f} px (5% / "
            f"median / 95%), {100 * m['share_at_least_one_latent_px']:.0f}% moving >= one latent "
            f"pixel ({m['latent_px']:g} px)"
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
        "enc. lag",
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
                str(e.get("encoding_lag_peak_tr", "-")),
            ]
        )
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    for name, e in report["subjects"].items():
        if "selection_failed" in e:
            print(f"{name}: voxel selection: {e['selection_failed']}")
    skipped = {e["lag_skipped"] for e in report["subjects"].values() if "lag_skipped" in e}
    for why in sorted(skipped):
        print(f"lag: not estimated: {why}")
    curves = {
        n: e["encoding_lag_r"] for n, e in report["subjects"].items() if "encoding_lag_r" in e
    }
    if curves:
        lags = list(next(iter(curves.values())))
        print(
            f"encoding lag (held-out r of a stimulus-feature model, training segments) at "
            f"{lags[0]}..{lags[-1]} TRs; [peak]; the profile's window starts at "
            f"{report['window']['offset']}:"
        )
        for name, curve in curves.items():
            peak = max(curve, key=curve.get)
            cells = [f"[{v:.3f}]" if k == peak else f"{v:.3f}" for k, v in curve.items()]
            print(f"  {name}: {' '.join(cells)}")
    skipped = {
        e["encoding_lag_skipped"]
        for e in report["subjects"].values()
        if "encoding_lag_skipped" in e
    }
    for why in sorted(skipped):
        print(f"encoding lag: not estimated: {why}")
    if "checks" in report:
        failed = [c for c in report["checks"] if not c["passed"]]
        if failed:
            print("benchmark validation FAILED:")
            for c in failed:
                print(f"  {c['subject']}: {c['name']} = {c['value']} (needs {c['threshold']})")
        else:
            kinds = "roi recall, false positives, lag (decoding and encoding)" + (
                ", motion" if any(c["subject"] == "stimuli" for c in report["checks"]) else ""
            )
            print(f"benchmark validation passed ({len(report['checks'])} checks: {kinds})")


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
    data = inspect_settings(args, root)
    bar, tick = progress_bar(len(list_subjects(root)), "inspect", args.quiet or args.json)
    try:
        report = inspect_dataset(
            root,
            data.preprocess,
            data.window,
            data.window_offset,
            data.window_edge,
            validate=not args.no_validate,
            progress=tick,
            frames_per_clip=data.frames_per_clip,
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_report(report)
    if args.figure:
        from harness.report.figures import write_lag_figure

        written = write_lag_figure(report, Path(args.figure))
        print(
            f"wrote {written}"
            if written
            else f"--figure {args.figure}: no encoding lag was estimated, so no figure",
            file=sys.stderr if args.json else sys.stdout,
        )
    if args.check and not report.get("valid", True):
        return 1
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from mindvideo.data.cc2017 import resolve_root
    from mindvideo.data.prepare import PrepareConfig, prepare_cc2017

    if args.format == "mindvideo-npy":
        return _prepare_mindvideo_npy(args)
    npy_only = {"--out": args.out, "--tr": args.tr, "--trs-per-segment": args.trs_per_segment}
    given = [k for k, v in npy_only.items() if v is not None]
    if given:
        raise ConfigError(f"data prepare cc2017: {', '.join(given)}: for mindvideo-npy only")
    root = Path(args.dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: folder not found (the release's video_fmri_dataset/)")
    base = PrepareConfig()
    if args.profile:
        base = load_profile(args.profile, parse_overrides(args.set)).data.prepare or base
    elif args.set:
        raise ConfigError("--set needs --profile (the profile whose data.prepare it overrides)")
    given = {"size": args.size, "fps": args.fps, "scene_cut_threshold": args.scene_cut_threshold}
    try:
        cfg = PrepareConfig(**(base.model_dump() | {k: v for k, v in given.items() if v}))
    except ValueError as e:
        raise ConfigError(f"data prepare: {e}") from None
    movies = sorted((resolve_root(root) / "stimuli").glob("*.mp4"))
    bar, tick = progress_bar(len(movies), "prepare", args.quiet)
    start = time.perf_counter()
    try:
        done = prepare_cc2017(root, cfg, Path(args.captioner) if args.captioner else None, tick)
    finally:
        bar.close()
    folder = resolve_root(root) / "stimuli"
    print(
        f"{folder}: {len(done.written)} segment(s) written, {len(done.skipped)} already "
        f"prepared, {len(done.captioned)} captioned, in {time.perf_counter() - start:.1f} s "
        f"({cfg.size} px, {cfg.fps:g} fps, {done.frames_per_tr} frames per TR)"
    )
    if done.scene_cuts:
        cuts = ", ".join(f"{s} {n}" for s, n in done.scene_cuts.items())
        print(f"scene cuts (threshold {cfg.scene_cut_threshold:g}): {cuts}")
    for seg, seconds in done.trimmed.items():
        print(f"{seg}: {seconds:g} s of movie past its runs' last volume left out")
    if done.no_runs:
        print(f"movies without fMRI runs, not prepared: {', '.join(done.no_runs)}")
    if not args.captioner:
        print(
            "no captions written: give --captioner FOLDER (a BLIP or BLIP-2 captioning model "
            "saved with save_pretrained) to caption each TR; contrastive learning needs them"
        )
    if done.no_movie:
        print(
            f"error: fMRI segments without a movie in {folder}: {', '.join(done.no_movie)}",
            file=sys.stderr,
        )
        return 1
    print(f"Next: mvbench data inspect {root}")
    return 0


def _prepare_mindvideo_npy(args: argparse.Namespace) -> int:
    from mindvideo.data.mindvideo_npy import convert

    cc2017_only = {
        "--captioner": args.captioner,
        "--profile": args.profile,
        "--set": args.set,
        "--size": args.size,
        "--fps": args.fps,
        "--scene-cut-threshold": args.scene_cut_threshold,
    }
    given = [k for k, v in cc2017_only.items() if v]
    if given:
        raise ConfigError(
            f"data prepare mindvideo-npy: {', '.join(given)}: for cc2017 only (MinD-Video's "
            "arrays are converted as they are: their frames, rate and captions)"
        )
    if not args.out:
        raise ConfigError(
            "data prepare mindvideo-npy: give --out FOLDER, where the CC2017 layout is written"
        )
    src, out = Path(args.dir), Path(args.out)
    tr = 2.0 if args.tr is None else args.tr
    per = 240 if args.trs_per_segment is None else args.trs_per_segment
    if tr <= 0 or per < 1:
        raise ConfigError(
            f"data prepare mindvideo-npy: --tr {tr:g} and --trs-per-segment {per} must be positive"
        )
    bar, tick = progress_bar(None, "convert", args.quiet)
    start = time.perf_counter()
    try:
        done = convert(src, out, tr, per, tick)
    finally:
        bar.close()
    voxels = ", ".join(f"{s} {n:,}" for s, n in done.voxels.items())
    print(
        f"{out}: {len(done.subjects)} subject(s) (voxels: {voxels}), "
        f"{done.segments['train']} training and {done.segments['test']} test segments, "
        f"{done.frames_per_tr} frames per {tr:g} s TR ({done.fps:g} fps); {done.written} files "
        f"written, {done.skipped} already there, in {time.perf_counter() - start:.1f} s"
    )
    if not done.captioned:
        print("no captions in the arrays (text_*.npy): contrastive learning needs them")
    elif len(done.captioned) < 2:
        print(f"captions for {', '.join(done.captioned)} only")
    print(
        "the runs are read as they are (MinD-Video's preprocessing and voxels); set "
        f"data.source: mindvideo_npy and data.root: {out}. Next: mvbench data inspect {out}"
    )
    return 0


def cmd_data_export(args: argparse.Namespace) -> int:
    from harness.score import export_clips

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: folder exists and is not empty; choose another --out")
    n = export_clips(Path(args.dir), args.split, out, args.format, args.frames)
    print(f"{n} {args.split} clips ({args.frames} frames each, {args.format}) written to {out}")
    return 0


def add_parsers(sub) -> None:
    """This group's commands, on the top-level subparsers."""
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
    set_argument(sim, "override a profile value, e.g. data.synth.protocol.subjects=2")
    quiet_command(sim, cmd_data_simulate, "no progress bar")

    ins = data_sub.add_parser("inspect", help="summarise (and validate) a CC2017-layout dataset")
    ins.add_argument("dir", help="dataset folder (holding subject*/ or video_fmri_dataset/)")
    ins.add_argument("--json", action="store_true", help="print the report as JSON")
    ins.add_argument(
        "--profile",
        help="take preprocessing and window settings from this "
        "profile (default: the dataset's own, else the paper's defaults)",
    )
    set_argument(
        ins,
        "override a value of the profile in use (--profile, or the one the dataset records), "
        "e.g. data.window_offset=3",
    )
    ins.add_argument(
        "--no-validate",
        action="store_true",
        help="summarise only: skip voxel selection and the decoding checks",
    )
    ins.add_argument(
        "--figure",
        metavar="PNG",
        help="write each subject's encoding-model accuracy by lag (the data-driven lag "
        "estimate) to this image",
    )
    ins.add_argument(
        "--check",
        action="store_true",
        help="exit with status 1 when a benchmark validation check fails",
    )
    quiet_command(ins, cmd_data_inspect, "no progress bar")

    prep = data_sub.add_parser(
        "prepare",
        help="convert the CC2017 release's movies into the loaders' frames, scene cuts and "
        "captions (idempotent: a second call does only what is missing)",
    )
    prep.add_argument(
        "format",
        choices=("cc2017", "mindvideo-npy"),
        help="cc2017: the release's movies, in place; mindvideo-npy: MinD-Video's preprocessed "
        "arrays, written in the CC2017 layout to --out",
    )
    prep.add_argument(
        "dir",
        help="cc2017: the release's video_fmri_dataset/ (or its parent); mindvideo-npy: the "
        "folder of fmri_train_<subject>.npy, video_train_256_3hz.npy, ...",
    )
    prep.add_argument("--out", help="mindvideo-npy: the folder to write (new, or an earlier one's)")
    prep.add_argument("--tr", type=float, help="mindvideo-npy: the arrays' TR in s (default 2)")
    prep.add_argument(
        "--trs-per-segment",
        type=int,
        help="mindvideo-npy: TRs per segment of arrays without a segment axis (default 240)",
    )
    prep.add_argument(
        "--captioner",
        metavar="FOLDER",
        help="a BLIP or BLIP-2 image-captioning model saved with save_pretrained: a caption "
        "per TR; without it no captions are written",
    )
    prep.add_argument("--profile", help="take data.prepare from this profile (e.g. paper)")
    set_argument(prep, "override a value of --profile")
    prep.add_argument("--size", type=int, help="frame side in px (default 256)")
    prep.add_argument("--fps", type=float, help="frames kept per second (default 3)")
    prep.add_argument(
        "--scene-cut-threshold",
        type=float,
        help="mean grey-level change between source frames that marks a cut (default 0.1)",
    )
    quiet_command(prep, cmd_data_prepare, "no progress bar")

    exp = data_sub.add_parser("export", help="write a split's ground-truth clips as files")
    exp.add_argument("dir", help="SynthCC dataset folder")
    exp.add_argument(
        "--split", default="test", help="train, val (where simulated) or test (default test)"
    )
    exp.add_argument("--out", required=True, help="output folder")
    exp.add_argument("--format", choices=("npy", "gif", "png"), default="npy")
    exp.add_argument("--frames", type=int, default=6, help="frames per clip (default 6 = 3 fps)")
    exp.set_defaults(func=cmd_data_export)
