"""Summarise a CC2017-layout dataset and, where SynthCC's truth/ exists, validate it.

Validation figures per subject:
- roi_recall / roi_false_positive_rate: the reproducibility voxel selection against the
  truth's stimulus-driven voxels;
- noise_ceiling: median over selected voxels of sqrt(split-half reliability of the mean of
  all test repeats, Spearman-Brown corrected), i.e. the highest correlation any model of the
  repeat-averaged test response can reach;
- lag_accuracy / lag_peak_tr: a ridge decoder from the fMRI volume at t+lag to the clip's
  shape, colour and motion direction, cross-validated across training segments; the lag
  where its accuracy peaks;
- encoding_lag_r / encoding_lag_peak_tr: a ridge encoding model from simple features of each
  TR's frames (luminance and motion energy on a 4 x 4 grid, mean colour) to the selected voxels
  `lag` TRs later, cross-validated across training segments (mean held-out correlation over
  voxels); needs frames, not annotations, so it estimates the lag of real data too;
- true_lag_tr: the lag at which the true HRFs respond most to a one-TR clip.
And for a SynthCC dataset, its realised motion (`motion_statistics`), checked against SynthCC
v2's rule where objects wrap.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mindvideo.data.cc2017 import (
    SPLITS,
    holds_preprocessed,
    list_subjects,
    open_stimuli,
    open_subject,
    read_metadata,
)
from mindvideo.data.cc2017 import resolve_root as resolve_cc2017
from mindvideo.data.paired import NoVoxelSelected, SubjectFMRI, prepare_fmri, split_samples
from mindvideo.data.preprocess import PreprocessConfig
from mindvideo.data.windows import Edge
from mindvideo.errors import DataError

Progress = Callable[[int, str], None]
THRESHOLDS = {"roi_recall": 0.9, "roi_false_positive_rate": 0.05, "lag_tolerance_tr": 1}
LABEL_COLUMNS = ("shape", "colour", "direction")


def noise_ceiling(test: dict[str, np.ndarray], seed: int = 0, splits: int = 10) -> float | None:
    """Median sqrt(Spearman-Brown split-half reliability) of the test-repeat mean.

    `test` maps segment -> (repeats, T, V) cleaned runs; None when fewer than 2 repeats.
    """
    runs = [x for x in test.values() if x.shape[0] >= 2]
    if not runs:
        return None
    n_rep = min(x.shape[0] for x in runs)
    rng = np.random.default_rng(seed)
    rel = []
    for _ in range(splits):
        perm = rng.permutation(n_rep)
        # each half's mean per segment, then the segments end to end: (T_all, V), never a copy
        # of every repeat (1 GB at the release's size)
        a = np.concatenate([x[perm[: n_rep // 2]].mean(0) for x in runs])
        b = np.concatenate([x[perm[n_rep // 2 : 2 * (n_rep // 2)]].mean(0) for x in runs])
        a = a - a.mean(0)
        b = b - b.mean(0)
        r = (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0) + 1e-12)
        # Spearman-Brown from a half (n/2 repeats) to all n repeats: factor k = 2.
        rel.append(2 * r / (1 + r))
    reliability = np.clip(np.mean(rel, axis=0), 0, 1)
    return float(np.median(np.sqrt(reliability)))


def _one_hot(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, codes = np.unique(labels, return_inverse=True)
    return np.eye(len(values))[codes], codes


def lag_curve(
    fmri: SubjectFMRI,
    clips: dict[str, pd.DataFrame | None],
    max_lag: int = 6,
    folds: int = 4,
    alphas: tuple[float, ...] = (1.0, 10.0, 100.0, 1e3, 1e4),
) -> dict[int, float]:
    """Cross-validated ridge decoding accuracy of clip attributes from the volume at t+lag.

    Folds group whole training segments; every lag uses the same clips (t < T - max_lag).
    Accuracy is the mean over shape, colour and direction of argmax classification accuracy.
    """
    segs = [s for s in fmri.segments["train"] if clips.get(s) is not None]
    if len(segs) < 2:
        raise DataError("lag analysis needs >= 2 annotated training segments")
    folds = min(folds, len(segs))
    seg_fold = {s: i % folds for i, s in enumerate(segs)}
    ys, fold_of = [], []
    per_lag: dict[int, list[np.ndarray]] = {lag: [] for lag in range(max_lag + 1)}
    for s in segs:
        run = fmri.segments["train"][s].mean(0)  # (T, V)
        n_tr = run.shape[0]
        t = np.arange(n_tr - max_lag)
        table = clips[s]
        ys.append(table.iloc[t][list(LABEL_COLUMNS)].to_numpy())
        fold_of.append(np.full(len(t), seg_fold[s]))
        for lag in per_lag:
            per_lag[lag].append(run[t + lag])
    labels = np.concatenate(ys)
    fold_of = np.concatenate(fold_of)
    targets = [_one_hot(labels[:, j]) for j in range(labels.shape[1])]
    y_all = np.concatenate([t[0] for t in targets], axis=1)
    spans = np.cumsum([0] + [t[0].shape[1] for t in targets])
    curve: dict[int, float] = {}
    for lag, blocks in per_lag.items():
        x = np.concatenate(blocks).astype(np.float64)
        acc = np.zeros(len(alphas))
        for f in range(folds):
            tr, te = fold_of != f, fold_of == f
            mu = x[tr].mean(0)
            xt, xe = x[tr] - mu, x[te] - mu
            ym = y_all[tr].mean(0)
            evals, evecs = np.linalg.eigh(xt.T @ xt)
            proj = evecs.T @ (xt.T @ (y_all[tr] - ym))
            for a, alpha in enumerate(alphas):
                w = evecs @ (proj / (evals + alpha)[:, None])
                pred = xe @ w + ym
                for j, (_, codes) in enumerate(targets):
                    hit = pred[:, spans[j] : spans[j + 1]].argmax(1) == codes[te]
                    acc[a] += hit.sum() / len(targets)
        curve[lag] = float(acc.max() / len(x))
    return curve


def stimulus_features(frames: np.ndarray, frames_per_tr: int, n_tr: int, grid: int = 4):
    """(n_tr, 2 * grid**2 + 3) simple features of each TR's frames: luminance and motion energy
    (mean absolute frame-to-frame change) on a grid x grid tiling, and the mean colour."""
    n = n_tr * frames_per_tr
    if frames.shape[0] < n:
        raise DataError(f"{frames.shape[0]} frames for {n_tr} TRs of {frames_per_tr} frames")
    h, w = frames.shape[1] // grid * grid, frames.shape[2] // grid * grid
    out = np.empty((n_tr, 2 * grid * grid + 3))
    previous = None
    for t in range(n_tr):  # a TR at a time: real movies are large, the frames memory-mapped
        clip = np.asarray(frames[t * frames_per_tr : (t + 1) * frames_per_tr, :h, :w], np.float32)
        clip /= 255.0
        grey = clip.mean(-1)  # (F, h, w)
        joined = grey if previous is None else np.concatenate([previous[None], grey])
        change = np.abs(np.diff(joined, axis=0)) if len(joined) > 1 else np.zeros_like(grey)
        cells = (grid, h // grid, grid, w // grid)
        out[t, : grid * grid] = grey.mean(0).reshape(cells).mean((1, 3)).ravel()
        out[t, grid * grid : 2 * grid * grid] = change.mean(0).reshape(cells).mean((1, 3)).ravel()
        out[t, 2 * grid * grid :] = clip.mean((0, 1, 2))
        previous = grey[-1]
    return out


def encoding_lag_curve(
    fmri: SubjectFMRI,
    features: dict[str, np.ndarray],
    lags: tuple[int, ...] = (0, 1, 2, 3, 4),
    folds: int = 4,
    alphas: tuple[float, ...] = (1.0, 10.0, 100.0, 1e3, 1e4),
) -> dict[int, float]:
    """Cross-validated accuracy of a ridge encoding model from each TR's stimulus features to
    the selected voxels `lag` TRs later: the mean over voxels of the correlation between held-out
    predictions and responses. Training segments only; folds group whole segments, and every
    lag predicts the same clips (t < T - max lag). Needs no annotations, so it runs on real
    data: the peak is the lag at which the stimulus best explains the fMRI."""
    segs = [s for s in fmri.segments.get("train", {}) if s in features]
    if len(segs) < 2:
        raise DataError("the encoding lag estimate needs >= 2 training segments with frames")
    folds = min(folds, len(segs))
    top = max(lags)
    xs, fold_of, runs = [], [], []
    for i, s in enumerate(segs):
        run = fmri.segments["train"][s].mean(0)  # (T, V)
        n = min(run.shape[0], len(features[s])) - top
        if n < 2:
            raise DataError(f"segment {s}: {run.shape[0]} TRs, too short for lags up to {top}")
        xs.append(features[s][:n])
        fold_of.append(np.full(n, i % folds))
        runs.append((run, n))
    x = np.concatenate(xs)
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    fold_of = np.concatenate(fold_of)
    # Memory: one lag's responses and one penalty's predictions at a time (at the release's
    # size, 4,200 clips x ~12,000 voxels in float64 is 0.4 GB each).
    curve: dict[int, float] = {}
    for lag in lags:
        y = np.concatenate([run[lag : lag + n] for run, n in runs]).astype(np.float64)
        fits = []  # per fold: its rows, the features' mean and eigenbasis, the projected targets
        for f in range(folds):
            tr, te = fold_of != f, fold_of == f
            mx, my = x[tr].mean(0), y[tr].mean(0)
            xt = x[tr] - mx
            evals, evecs = np.linalg.eigh(xt.T @ xt)
            fits.append((te, mx, my, evals, evecs, evecs.T @ (xt.T @ (y[tr] - my))))
        yc = y - y.mean(0)
        yy = (yc * yc).sum(0)
        best = -np.inf
        for alpha in alphas:
            pred = np.zeros_like(y)
            for te, mx, my, evals, evecs, proj in fits:
                pred[te] = (x[te] - mx) @ (evecs @ (proj / (evals + alpha)[:, None])) + my
            pc = pred - pred.mean(0)
            r = (pc * yc).sum(0) / np.sqrt((pc * pc).sum(0) * yy + 1e-12)
            best = max(best, float(r.mean()))
        curve[lag] = best
    return curve


def inspect_dataset(
    root: Path,
    preprocess: PreprocessConfig | None = None,
    window: int = 2,
    window_offset: int = 2,
    window_edge: Edge = "drop",
    validate: bool = True,
    max_lag: int = 6,
    progress: Progress | None = None,
    frames_per_clip: int = 6,
) -> dict:
    """A JSON-ready summary of the dataset at `root` (see the module docstring);
    `frames_per_clip` is the pipeline's (the scored frames of SynthCC's motion statistics)."""
    preprocess = preprocess or PreprocessConfig()
    root = resolve_cc2017(Path(root))
    meta = read_metadata(root)
    stimuli = open_stimuli(root)
    truth_dir = root / "truth"
    truth = None
    if (truth_dir / "summary.json").exists():
        truth = json.loads((truth_dir / "summary.json").read_text())
    report: dict = {
        "root": str(root),
        "dataset": meta.get("name", "CC2017"),
        "format": "cc2017",
        "tr": None,
        "window": {"size": window, "offset": window_offset, "edge": window_edge},
        "has_truth": truth is not None,
        "subjects": {},
    }
    if holds_preprocessed(root):
        report["preprocessed"] = (
            "MinD-Video's preprocessed arrays (converted): read as they are, every voxel kept "
            "(no detrending, z-scoring or selection; one viewing per segment, no noise ceiling)"
        )
    if meta.get("corpus"):
        report["corpus"] = {
            "subjects": len(meta["corpus"]["subjects"]),
            "runs_per_subject": meta["corpus"]["runs"],
            "trs_per_run": meta["corpus"]["trs"],
        }
    if stimuli is not None:
        report["stimuli"] = {"fps": stimuli.fps, "frames_per_tr": stimuli.frames_per_tr}
    tick = progress or (lambda n, what: None)
    # Keep every test repeat: the noise ceiling needs them; averaging happens below.
    stats_cfg = preprocess.model_copy(update={"test_repeats": "separate"})
    checks = []
    missing_frames: set[str] = set()
    for subject in list_subjects(root):
        rec = open_subject(root, subject)
        tr, n_cortical = rec.check()
        report["tr"] = tr
        entry: dict = {"cortical_voxels": n_cortical}
        splits = [s for s in SPLITS if s != "val" or rec.segments("val")]  # val: where it is
        for split in splits:
            segs = rec.segments(split)
            lengths = sorted({rec.info(rec.runs[split][s][0]).n_volumes for s in segs})
            n_samples = split_samples(rec, split, window, window_offset, window_edge, preprocess)
            entry[split] = {
                "segments": len(segs),
                "repeats": sorted({rec.repeats(split, s) for s in segs}),
                "trs_per_segment": lengths,
                "samples": n_samples,
            }
        if stimuli is not None:
            for split in splits:
                for seg in rec.segments(split):
                    if not (stimuli.folder / f"{seg}.npy").exists():
                        missing_frames.add(seg)
                        continue
                    stimuli.check_length(seg, rec.info(rec.runs[split][seg][0]).n_volumes)
        if validate:
            entry.update(_validate(rec, stats_cfg, stimuli, truth, root, max_lag, tick))
            checks.extend(_checks(subject, entry))
        report["subjects"][subject] = entry
        tick(1, subject)
    if missing_frames:
        # Real CC2017 ships mp4 movies: the pipeline needs them as stimuli/<segment>.npy.
        report.setdefault("stimuli", {})["segments_without_npy_frames"] = sorted(missing_frames)
    world = (meta.get("config") or {}).get("world")
    if stimuli is not None and world is not None:
        report["motion"] = motion_statistics(stimuli, world, frames_per_clip)
        if validate:
            checks.extend(_motion_checks(report["motion"]))
    if validate and truth is not None:
        report["checks"] = checks
        report["valid"] = all(c["passed"] for c in checks)
    return report


def motion_statistics(stimuli, world: dict, frames_per_clip: int) -> dict:
    """The object's realised motion in SynthCC's frame tables (<segment>_frames.csv) against
    the world config: its speed per scene, and its displacement between consecutive scored
    frames (`frames_per_clip` spread over each TR) within a scene, in pixels (across the frame's
    edges where objects wrap). One latent pixel of the stand-in (a factor-4 autoencoder on
    64 px frames) is width / 16 pixels: SynthCC v2's motion rule asks at least that."""
    unit = min(world["height"], world["width"])
    wrap = world.get("motion", "capped") == "wrap"
    step = max(1, stimuli.frames_per_tr // frames_per_clip)  # rendered frames per scored frame
    speeds, moves = [], []
    for path in sorted(stimuli.folder.glob("*_frames.csv")):
        table = pd.read_csv(path, usecols=["scene", "speed", "x", "y"])
        scored = table.iloc[::step]
        same = scored["scene"].to_numpy()[1:] == scored["scene"].to_numpy()[:-1]
        d = np.diff(scored[["x", "y"]].to_numpy(), axis=0)
        if wrap:  # the shorter way round the torus
            size = np.array([world["width"], world["height"]]) / unit
            d -= size * np.round(d / size)
        moves.append(np.hypot(d[:, 0], d[:, 1])[same] * unit)
        speeds.append(table.groupby("scene")["speed"].first().to_numpy())
    if not moves:
        return {"skipped": "no <segment>_frames.csv tables (SynthCC writes them)"}
    px, speed = np.concatenate(moves), np.concatenate(speeds)
    latent_px = world["width"] / 16
    lo, hi = world["speed_range"]
    return {
        "motion": "wrap" if wrap else "capped",
        "configured_speed_range": [lo, hi],
        "speed": {
            "min": float(speed.min()),
            "median": float(np.median(speed)),
            "max": float(speed.max()),
        },
        "scored_frames_per_s": frames_per_clip * stimuli.fps / stimuli.frames_per_tr,
        "px_per_scored_frame": {
            "p5": float(np.percentile(px, 5)),
            "median": float(np.median(px)),
            "p95": float(np.percentile(px, 95)),
        },
        "latent_px": latent_px,
        "share_at_least_one_latent_px": float((px >= latent_px - 1e-6).mean()),
        "share_speed_in_range": float(((speed >= lo - 1e-9) & (speed <= hi + 1e-9)).mean()),
    }


def _motion_checks(motion: dict) -> list[dict]:
    """SynthCC v2's motion rule (wrapping worlds): every scene at its drawn speed within the
    configured range, every scored frame moving the object by one latent pixel or more. A v1
    world (capped travel) is reported, not checked: its rule was not this one."""
    if motion.get("motion") != "wrap":
        return []
    return [
        {
            "subject": "stimuli",
            "name": "share_speed_in_range",
            "value": motion["share_speed_in_range"],
            "threshold": f"== 1 (speeds in {motion['configured_speed_range']})",
            "passed": motion["share_speed_in_range"] == 1.0,
        },
        {
            "subject": "stimuli",
            "name": "share_at_least_one_latent_px",
            "value": motion["share_at_least_one_latent_px"],
            "threshold": f"== 1 (>= {motion['latent_px']:g} px per scored frame)",
            "passed": motion["share_at_least_one_latent_px"] == 1.0,
        },
    ]


def _validate(rec, cfg, stimuli, truth, root, max_lag, tick) -> dict:
    out: dict = {}
    try:
        fmri = prepare_fmri(rec, cfg)
        out["selected_voxels"] = int(fmri.selected.size)
    except NoVoxelSelected as e:
        # Summarise what can be: the estimates below on the most reproducible voxels, unthresholded
        loose = cfg.selection.model_copy(update={"p_threshold": 1.0, "correction": "none"})
        fmri = prepare_fmri(rec, cfg.model_copy(update={"selection": loose}))
        out["selected_voxels"] = 0
        out["selection_failed"] = (
            f"{e}. The noise ceiling and lags below use the most reproducible "
            f"{cfg.selection.keep_fraction:g} of voxels ({fmri.selected.size}), unthresholded"
        )
    out["noise_ceiling"] = noise_ceiling(fmri.segments.get("test", {}))
    if truth is not None:
        arrays = np.load(root / "truth" / f"{rec.subject}.npz")
        driven = (arrays["region"] < 4) & (arrays["snr"] > 0)
        selected = np.zeros(driven.shape[0], dtype=bool)
        selected[fmri.selected] = "selection_failed" not in out  # nothing selected: none
        out["roi_recall"] = float((selected & driven).sum() / max(driven.sum(), 1))
        out["roi_false_positive_rate"] = float((selected & ~driven).sum() / max((~driven).sum(), 1))
        out["selected_fraction_by_region"] = {
            name: round(float(selected[arrays["region"] == k].mean()), 4)
            for k, name in enumerate(truth["regions"])
            if (arrays["region"] == k).any()
        }
        out["true_lag_tr"] = int(truth["subjects"][rec.subject]["true_lag_tr"])
    out.update(_encoding_lag(fmri, stimuli, max_lag))
    clips = {s: stimuli.clips(s) for s in rec.segments("train")} if stimuli else {}
    tables = {s: c for s, c in clips.items() if c is not None}
    annotated = {s: c for s, c in tables.items() if set(LABEL_COLUMNS) <= set(c.columns)}
    if len(annotated) >= 2:
        curve = lag_curve(fmri, annotated, max_lag=max_lag)
        out["lag_accuracy"] = {str(k): round(v, 4) for k, v in curve.items()}
        out["lag_peak_tr"] = int(max(curve, key=curve.get))
    elif tables:  # real data: captions, not SynthCC's attributes; the rest of the report stands
        out["lag_skipped"] = (
            f"the lag analysis decodes {', '.join(LABEL_COLUMNS)} from the fMRI and the "
            f"<segment>_clips.csv tables have {'only ' if not annotated else ''}"
            f"{len(annotated)} annotated training segment(s) of {len(tables)} (it needs 2)"
        )
    return out


def _encoding_lag(fmri: SubjectFMRI, stimuli, max_lag: int) -> dict:
    """The encoding-model lag estimate where the training segments have frames, else why not."""
    if stimuli is None:
        return {"encoding_lag_skipped": "no stimuli/ folder"}
    train = fmri.segments.get("train", {})
    framed = [s for s in train if (stimuli.folder / f"{s}.npy").exists()]
    if len(framed) < 2:
        return {
            "encoding_lag_skipped": f"{len(framed)} of {len(train)} training segments have "
            "stimuli/<segment>.npy frames (it needs 2)"
        }
    features = {
        s: stimulus_features(stimuli.frames(s), stimuli.frames_per_tr, train[s].shape[1])
        for s in framed
    }
    curve = encoding_lag_curve(fmri, features, lags=tuple(range(max_lag + 1)))
    return {
        "encoding_lag_r": {str(k): round(v, 4) for k, v in curve.items()},
        "encoding_lag_peak_tr": int(max(curve, key=curve.get)),
    }


def _checks(subject: str, entry: dict) -> list[dict]:
    checks = []
    if "roi_recall" in entry:
        checks.append(
            {
                "subject": subject,
                "name": "roi_recall",
                "value": entry["roi_recall"],
                "threshold": f">= {THRESHOLDS['roi_recall']}",
                "passed": entry["roi_recall"] >= THRESHOLDS["roi_recall"],
            }
        )
        fpr = entry["roi_false_positive_rate"]
        checks.append(
            {
                "subject": subject,
                "name": "roi_false_positive_rate",
                "value": fpr,
                "threshold": f"<= {THRESHOLDS['roi_false_positive_rate']}",
                "passed": fpr <= THRESHOLDS["roi_false_positive_rate"],
            }
        )
    for name in ("lag_peak_tr", "encoding_lag_peak_tr"):  # the decoder's and the encoder's
        if name in entry and "true_lag_tr" in entry:
            gap = abs(entry[name] - entry["true_lag_tr"])
            checks.append(
                {
                    "subject": subject,
                    "name": name,
                    "value": entry[name],
                    "threshold": f"within {THRESHOLDS['lag_tolerance_tr']} TR of "
                    f"true_lag_tr={entry['true_lag_tr']}",
                    "passed": gap <= THRESHOLDS["lag_tolerance_tr"],
                }
            )
    return checks


def detect_format(root: Path) -> str:
    """Which layout `root` holds: "cc2017", "mindvideo_npy" or "hcp" (an unpaired corpus)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if any(root.glob("subject*/fmri")) or any(root.glob("video_fmri_dataset/subject*/fmri")):
        return "cc2017"
    if any(root.glob("fmri_train_*.npy")):
        return "mindvideo_npy"
    if any(root.glob("*/MNINonLinear/Results")):
        return "hcp"
    raise DataError(
        f"{root}: not a dataset this tool reads; expected the CC2017 layout "
        "(subject1/fmri/seg1/cifti/seg1_1_Atlas.dtseries.nii), MinD-Video's npy files "
        "(fmri_train_subject1.npy, video_train_256_3hz.npy) or an HCP-style corpus "
        "(<subject>/MNINonLinear/Results/<run>/<run>_Atlas*.dtseries.nii)"
    )


def inspect_npy(root: Path) -> dict:
    """Summary of a MinD-Video npy folder: per subject and split, samples, voxels, clips."""
    from mindvideo.data import mindvideo_npy

    report: dict = {
        "root": str(root),
        "dataset": "MinD-Video npy",
        "format": "mindvideo_npy",
        "subjects": {},
    }
    for subject in mindvideo_npy.list_subjects(root):
        entry = {}
        for split in ("train", "test"):
            s = mindvideo_npy.load_split(root, subject, split)
            mindvideo_npy.check_finite(s, Path(root) / f"fmri_{split}_{subject}.npy")
            entry[split] = {
                "samples": len(s),
                "segments": s.segments,
                "voxels": int(s.fmri.shape[1]),
                "clip_shape": list(s.video.shape[1:]),
                "captions": s.text is not None,
            }
        report["subjects"][subject] = entry
    return report


def inspect_corpus(root: Path, mask: Path | None = None) -> dict:
    """Summary of an HCP-style corpus: subjects, runs, volumes and ROI size."""
    from mindvideo.data.cifti import dtseries_info
    from mindvideo.data.hcp import open_corpus

    corpus = open_corpus(root, mask)
    infos = [dtseries_info(p) for p in corpus.runs]
    return {
        "root": str(root),
        "dataset": "HCP-style corpus",
        "format": "hcp",
        "subjects": len(corpus.subjects()),
        "runs": len(corpus.runs),
        "volumes": sum(i.n_volumes for i in infos),
        "tr": sorted({i.tr for i in infos}),
        "cortical_voxels": int(corpus.mask.size),
        "roi_voxels": corpus.n_voxels,
    }
