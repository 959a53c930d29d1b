"""`mvbench score` and `mvbench baselines`: scoring reconstructions outside a suite."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.cli.common import progress_bar, quiet_command, set_argument, store_folder
from harness.cli.data import inspect_settings
from harness.profiles import available_profiles, load_profile
from mindvideo.errors import ConfigError


def _dataset_profile(dataset: Path | None, name: str | None = None):
    """The profile a dataset was simulated with (or the one named), if it can be found."""
    from mindvideo.data.cc2017 import read_metadata

    if name is None and dataset is not None:
        recorded = read_metadata(dataset).get("profile")
        name = recorded if recorded in available_profiles() else None
    return load_profile(name) if name else None


def _scorers(args: argparse.Namespace, dataset: Path | None, quiet: bool):
    """Judges and CLIP: given on the command line, else the SynthCC dataset's, trained by the
    `foundation` stage (with the sizes of the dataset's profile, `eval.judges` and `eval.clip`)
    into the store's stage cache, once."""
    from harness.profiles import typed_section
    from harness.score import foundation_folder
    from mindvideo.eval.foundation import load_scorers
    from mindvideo.eval.judges import JudgeConfig, load_judge
    from mindvideo.eval.protocols import Scorers
    from mindvideo.models.clip import ClipConfig, load_clip

    frame = load_judge(Path(args.frame_judge), "frame") if args.frame_judge else None
    video = load_judge(Path(args.video_judge), "video") if args.video_judge else None
    clip = load_clip(Path(args.clip), args.clip_model) if args.clip else None
    if dataset is None or None not in (frame, video, clip):
        return Scorers(frame_judge=frame, video_judge=video, clip=clip)
    profile = _dataset_profile(dataset, getattr(args, "profile", None))
    judges = typed_section(profile, "eval.judges", JudgeConfig) if profile else JudgeConfig()
    clip_cfg = typed_section(profile, "eval.clip", ClipConfig) if profile else ClipConfig()
    store = store_folder(args)
    folder = foundation_folder(dataset, judges, clip_cfg, store, quiet)
    print(f"SynthCC judges and CLIP: {folder} (the foundation stage, cached)", file=sys.stderr)
    trained = load_scorers(folder)
    return Scorers(
        frame_judge=frame or trained.frame_judge,
        video_judge=video or trained.video_judge,
        clip=clip or trained.clip,
    )


def cmd_score(args: argparse.Namespace) -> int:
    from harness.score import Truth, format_report, is_dataset, load_pair, track_scores
    from mindvideo.eval.protocols import get_protocol, score
    from mindvideo.eval.video_io import read_side_by_side

    protocol = get_protocol(
        args.protocol,
        args.extra_metrics,
        n_frames=args.frames,
        size=args.size,
        trials=args.trials,
        exclude_scene_cuts=True if args.exclude_scene_cuts else None,
    )
    if args.side_by_side:
        if args.pred or args.truth:
            raise ConfigError(
                "--side-by-side reads both the ground truth and the reconstructions from its "
                "folder: leave out --pred and --truth"
            )
        folder = Path(args.side_by_side)
        names, pred, truth_clips = read_side_by_side(folder, truth_first=args.order == "truth")
        truth = Truth(names, truth_clips, None, None)
        pred_dir = truth_dir = folder
    elif not (args.pred and args.truth):
        raise ConfigError(
            "give --pred and --truth (folders of clips named alike, or a SynthCC dataset as "
            "--truth), or --side-by-side DIR (released side-by-side GIFs)"
        )
    else:
        pred_dir, truth_dir = Path(args.pred), Path(args.truth)
        names, pred, truth = load_pair(pred_dir, truth_dir, protocol.n_frames)
    dataset = truth_dir if is_dataset(truth_dir) else truth.dataset
    scorers = _scorers(args, dataset, args.quiet or args.json)
    report = score(pred, truth.clips, protocol, scorers, truth.scene_cut, seed=args.seed)
    result = report.to_json() | {"pred": str(pred_dir), "truth": str(truth_dir), "seed": args.seed}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    if not args.no_track:
        params = {"pred": str(pred_dir), "truth": str(truth_dir), "seed": str(args.seed)}
        params["protocol"] = report.protocol
        track_scores(store_folder(args), "score", [(pred_dir.name, params, result["metrics"])])
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_report(report))
    return 0


def cmd_baselines(args: argparse.Namespace) -> int:
    from harness.score import track_scores
    from mindvideo.data.cc2017 import list_subjects
    from mindvideo.data.paired import pairing
    from mindvideo.eval.baselines import BaselinesConfig, run_baselines

    root = Path(args.dir)
    data = inspect_settings(args, root)
    subjects = args.subjects or list_subjects(root)
    scorers = _scorers(args, root, args.quiet or args.json)
    out = Path(args.out) if args.out else None
    rows: dict[str, dict[str, dict[str, float]]] = {}
    bar, tick = progress_bar(None, "baselines", args.quiet or args.json)
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
    if not args.no_track:
        tracked = [
            (
                f"{method} / {subject}",
                {
                    "dataset": str(root),
                    "method": method,
                    "subject": subject,
                    "seed": str(args.seed),
                },
                metrics,
            )
            for subject, by_method in rows.items()
            for method, metrics in by_method.items()
        ]
        track_scores(store_folder(args), "baselines", tracked)
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


def _store_arguments(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument(
        "--store",
        help="store folder: its stage cache holds a SynthCC dataset's judges and CLIP, its "
        "MLflow the scores (default ./.mvbench or $MVBENCH_STORE)",
    )
    p.add_argument(
        "--no-track",
        action="store_true",
        help=f"do not record the scores in the store's MLflow (experiment mvbench-{command})",
    )


def add_parsers(sub) -> None:
    """This group's commands, on the top-level subparsers."""
    sc = sub.add_parser("score", help="score reconstructions against ground truth")
    sc.add_argument(
        "--pred",
        help="folder of predicted clips (.gif, .mp4, .npy, PNG frame folders, or one clips.npy)",
    )
    sc.add_argument(
        "--truth",
        help="folder of ground-truth clips named like "
        "the predictions, or a SynthCC dataset (predictions named <segment>_<clip>)",
    )
    sc.add_argument(
        "--side-by-side",
        metavar="DIR",
        help="instead of --pred and --truth: a folder of clips each showing the ground truth and "
        "the reconstruction side by side (as published GIFs do); the panels are found by their "
        "padding and scored against each other",
    )
    sc.add_argument(
        "--order",
        choices=("truth", "pred"),
        default="truth",
        help="--side-by-side: which panel is on the left (default: the ground truth)",
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
    _store_arguments(sc, "score")
    quiet_command(sc, cmd_score)

    bl = sub.add_parser(
        "baselines",
        help="decode a SynthCC dataset with the baselines "
        "(ridge retrieval, shuffled control, random training clips) and score them",
    )
    bl.add_argument("dir", help="SynthCC dataset folder")
    bl.add_argument(
        "--profile", help="preprocessing and window settings (default: the dataset's own profile)"
    )
    set_argument(bl, "override a profile value")
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
    _store_arguments(bl, "baselines")
    quiet_command(bl, cmd_baselines, frame_judge=None, video_judge=None, clip=None, clip_model=None)
