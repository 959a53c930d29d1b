"""Write a SynthCC dataset to disk in the CC2017 file layout (plus an HCP-style corpus).

Layout (the real CC2017 release uses the same subject/fmri/segment/cifti naming):

    dataset.json                              what was simulated and how
    stimuli/classes.json                      frame and video class names
    stimuli/{seg}.npy                         uint8 frames (F, H, W, 3) at world.fps
    stimuli/{seg}_frames.csv                  per frame: scene, attributes, labels, caption
    stimuli/{seg}_clips.csv                   per TR clip: video label, scene_cut, caption
    stimuli/{seg}_scenes.csv                  the scene list
    subject{n}/fmri/{seg}/cifti/{seg}_{r}_Atlas.dtseries.nii
    hcp/{id}/MNINonLinear/Results/rfMRI_REST{r}_LR/rfMRI_REST{r}_LR_Atlas_MSMAll.dtseries.nii
    hcp/roi_mask.npy                          template visual-cortex mask (cortical vertices)
    truth/subject{n}.npz, truth/summary.json  ground truth, read only by validation

Segments are named seg1..segN (training, `train_repeats` viewings), test1..testM (test,
`test_repeats` viewings) and, with protocol.val_segments, val1..valK (validation, seen like the
test segments). Validation segments draw from streams of their own and are standardised with
the statistics of the training and test runs, so adding them leaves every other byte of the
dataset as it was (dataset.json gains its `val` entries). The whole folder is written under a
temporary name and renamed when complete, so an interrupted run never leaves a folder that
looks finished.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mindvideo.data.cifti import SurfaceModel, brain_axis, write_dtseries
from mindvideo.data.synth import brain as brain_model
from mindvideo.data.synth import world
from mindvideo.data.synth.config import VAL_NEUTRAL, VERSION_NEUTRAL, SimulateConfig
from mindvideo.errors import ConfigError, DataError

FORMAT_VERSION = 1
Progress = Callable[[int, str], None]  # (units done since last call, what is being done)

# Stream tags: each random draw comes from default_rng([seed, TAG, ...indices]).
_STIMULUS, _BRAIN, _NOISE, _CORPUS_BRAIN, _CORPUS_STIMULUS, _CORPUS_NOISE = range(1, 7)
# The split index in those streams: validation comes last, so it changes no other stream.
_SPLIT_ID = {"train": 0, "test": 1, "val": 2}
SEGMENT_PREFIX = {"train": "seg", "test": "test", "val": "val"}


def segment_names(split: str, n: int) -> list[str]:
    return [f"{SEGMENT_PREFIX[split]}{k + 1}" for k in range(n)]


def cifti_path(root: Path, subject: str, segment: str, repeat: int) -> Path:
    """The CC2017 path of one fMRI run (repeat counts from 1)."""
    return root / subject / "fmri" / segment / "cifti" / f"{segment}_{repeat}_Atlas.dtseries.nii"


def hcp_path(root: Path, subject_id: str, run: int) -> Path:
    name = f"rfMRI_REST{run}_LR"
    return (
        root
        / "hcp"
        / subject_id
        / "MNINonLinear"
        / "Results"
        / name
        / f"{name}_Atlas_MSMAll.dtseries.nii"
    )


def _check(cfg: SimulateConfig) -> int:
    per_tr = cfg.protocol.tr * cfg.world.fps
    if abs(per_tr - round(per_tr)) > 1e-6:
        raise ConfigError(
            f"data.synth: protocol.tr ({cfg.protocol.tr}) x world.fps ({cfg.world.fps}) must be "
            "a whole number of frames per TR; change world.fps"
        )
    return int(round(per_tr))


def work_units(cfg: SimulateConfig) -> int:
    """How many progress units `simulate` reports (for a progress bar's total)."""
    p = cfg.protocol
    segments = p.train_segments + p.test_segments + p.val_segments
    return segments + p.subjects * segments + cfg.corpus.subjects * cfg.corpus.runs


def _surfaces(brain: brain_model.SubjectBrain, side: int) -> list[SurfaceModel]:
    return [
        SurfaceModel(name, side * side, brain.vertex[brain.hemisphere == h])
        for h, name in enumerate(brain_model.HEMISPHERES)
    ]


def _runs_to_cifti(
    signal: np.ndarray,
    b: brain_model.SubjectBrain,
    cfg: SimulateConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """One run's raw scanner values: baseline x (1 + 1% x (signal + noise + drift))."""
    n_tr = signal.shape[0]
    noise = brain_model.noise(rng, n_tr, b, cfg.brain)
    drift = brain_model.drift(rng, n_tr, b.n_voxels, cfg.brain.drift_std)
    cortex = b.baseline * (1.0 + 0.01 * (signal + noise + drift))
    n_sub = cfg.brain.subcortical_voxels
    sub = 1000.0 * (1.0 + 0.01 * rng.standard_normal((n_tr, n_sub)))
    return np.concatenate([cortex, sub], axis=1).astype(np.float32)


def _standardised_signal(
    b: brain_model.SubjectBrain, bolds: list[np.ndarray], n_reference: int | None = None
) -> list[np.ndarray]:
    """Scale each voxel's BOLD to its SNR: unit noise, signal std = snr over the first
    `n_reference` runs (default all), applied to every run."""
    allb = np.concatenate(bolds[:n_reference], axis=0)
    mean = allb.mean(axis=0)
    std = allb.std(axis=0)
    gain = np.where(std > 1e-12, b.snr / np.maximum(std, 1e-12), 0.0)
    return [(x - mean) * gain for x in bolds]


def simulate(
    cfg: SimulateConfig,
    out: Path,
    progress: Progress | None = None,
    overwrite: bool = False,
    extra: dict | None = None,
) -> dict:
    """Simulate SynthCC into `out`; returns the dataset.json content. Same cfg, same bytes.

    `extra` entries (e.g. the profile's name) are recorded in dataset.json.
    """
    per_tr = _check(cfg)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file, not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DataError(
                f"{out}: folder exists and is not empty; choose another --out or pass --overwrite"
            )
        if not (out / "dataset.json").exists():
            # --overwrite replaces a dataset, never an arbitrary folder of the user's.
            raise DataError(
                f"{out}: not a SynthCC dataset (no dataset.json), so --overwrite will not "
                "delete it; choose another --out"
            )
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tick = progress or (lambda n, what: None)
    try:
        summary = _write(cfg, tmp, per_tr, tick, extra or {})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return summary


def _write(cfg: SimulateConfig, root: Path, per_tr: int, tick: Progress, extra: dict) -> dict:
    p, w, side = cfg.protocol, cfg.world, cfg.brain.sheet_side
    splits = {
        "train": (segment_names("train", p.train_segments), p.train_trs, p.train_repeats),
        "test": (segment_names("test", p.test_segments), p.test_trs, p.test_repeats),
    }
    if p.val_segments:  # absent otherwise, so that dataset.json stays as it was
        splits["val"] = (segment_names("val", p.val_segments), *p.val_shape)
    stim = root / "stimuli"
    stim.mkdir()
    (stim / "classes.json").write_text(json.dumps(world.class_names(), indent=1))

    # Stimuli are shared by all subjects (as in CC2017); keep only the pooled features.
    features: dict[str, np.ndarray] = {}
    tables: dict[str, object] = {}
    for split, (names, n_tr, _) in splits.items():
        for k, seg in enumerate(names):
            rng = np.random.default_rng([cfg.seed, _STIMULUS, _SPLIT_ID[split], k])
            scenes = world.make_scenes(rng, n_tr * p.tr, w)
            n_frames = n_tr * per_tr
            frames = world.render_segment(scenes, n_frames, w)
            table = world.frame_table(scenes, n_frames, w)
            np.save(stim / f"{seg}.npy", frames)
            table.to_csv(stim / f"{seg}_frames.csv", index=False)
            world.clip_table(table, per_tr).to_csv(stim / f"{seg}_clips.csv", index=False)
            world.scenes_table(scenes).to_csv(stim / f"{seg}_scenes.csv", index=False)
            features[seg] = brain_model.stimulus_features(frames)
            tables[seg] = table
            tick(1, f"stimuli {seg}")

    truth_dir = root / "truth"
    truth_dir.mkdir()
    subjects = [f"subject{s + 1}" for s in range(p.subjects)]
    truth_summary: dict[str, dict] = {}
    for s, subject in enumerate(subjects):
        b = brain_model.make_brain(np.random.default_rng([cfg.seed, _BRAIN, s]), cfg.brain)
        axis = brain_axis(_surfaces(b, side), cfg.brain.subcortical_voxels)
        segs = [seg for names, _, _ in splits.values() for seg in names]
        n_reference = p.train_segments + p.test_segments  # validation runs follow them
        bolds = [
            brain_model.bold_response(
                b, brain_model.neural_drive(b, features[seg], tables[seg]), w.fps, p.tr
            )
            for seg in segs
        ]
        scaled = _standardised_signal(b, bolds, n_reference)
        signals = dict(zip(segs, scaled, strict=True))
        for split, (names, _, repeats) in splits.items():
            for k, seg in enumerate(names):
                for r in range(repeats):
                    rng = np.random.default_rng([cfg.seed, _NOISE, s, _SPLIT_ID[split], k, r])
                    data = _runs_to_cifti(signals[seg], b, cfg, rng)
                    write_dtseries(cifti_path(root, subject, seg, r + 1), data, p.tr, axis)
                tick(1, f"{subject} {seg}")
        np.savez_compressed(truth_dir / f"{subject}.npz", **b.truth_arrays())
        truth_summary[subject] = {
            "true_lag_tr": brain_model.true_lag_tr(b, p.tr),
            "driven_voxels": int(b.driven.sum()),
            "voxels_per_region": {
                name: int((b.region == i).sum()) for i, name in enumerate(brain_model.REGIONS)
            },
            "mean_hrf_peak_s": round(float(b.hrf_peak_s[b.driven].mean()), 4),
        }
    (truth_dir / "summary.json").write_text(
        json.dumps({"regions": list(brain_model.REGIONS), "subjects": truth_summary}, indent=1)
    )

    corpus_ids = _write_corpus(cfg, root, per_tr, tick)
    n_cortical = 2 * side * side
    summary = {
        "name": "SynthCC",
        "format": "cc2017",
        "format_version": FORMAT_VERSION,
        "tr": p.tr,
        "fps": w.fps,
        "frames_per_tr": per_tr,
        "height": w.height,
        "width": w.width,
        "subjects": subjects,
        "segments": {split: names for split, (names, _, _) in splits.items()},
        "trs_per_segment": {split: n for split, (_, n, _) in splits.items()},
        "repeats": {split: r for split, (_, _, r) in splits.items()},
        "cortical_vertices": n_cortical,
        "subcortical_voxels": cfg.brain.subcortical_voxels,
        "corpus": {"subjects": corpus_ids, "runs": cfg.corpus.runs, "trs": cfg.corpus.trs},
        "config": config_record(cfg),
        **extra,
    }
    (root / "dataset.json").write_text(json.dumps(summary, indent=1))
    return summary


def config_record(cfg: SimulateConfig) -> dict:
    """The config as dataset.json records it: options added later are left out while they
    hold the values that behave as before they existed (no validation segments; SynthCC v1's
    capped motion), so such a dataset reads as before."""
    record = cfg.model_dump(mode="json")
    if not cfg.protocol.val_segments:
        for name in VAL_NEUTRAL:
            record["protocol"].pop(name, None)
    for path, value in VERSION_NEUTRAL.items():
        *parents, leaf = path
        section = record
        for part in parents:
            section = section[part]
        if section.get(leaf) == value:
            del section[leaf]
    return record


def _write_corpus(cfg: SimulateConfig, root: Path, per_tr: int, tick: Progress) -> list[str]:
    """The unpaired pretraining corpus: new subjects, random stimuli, no labels kept."""
    c, p, side = cfg.corpus, cfg.protocol, cfg.brain.sheet_side
    ids = [f"synth{c_id + 1:03d}" for c_id in range(c.subjects)]
    # Corpus frames are never saved: render them straight at the size cortex pools them to.
    shrink = max(1, -(-max(cfg.world.height, cfg.world.width) // 32))
    small = cfg.world.model_copy(
        update={"height": cfg.world.height // shrink, "width": cfg.world.width // shrink}
    )
    for c_id, sid in enumerate(ids):
        b = brain_model.make_brain(
            np.random.default_rng([cfg.seed, _CORPUS_BRAIN, c_id]), cfg.brain
        )
        axis = brain_axis(_surfaces(b, side), cfg.brain.subcortical_voxels)
        bolds = []
        for r in range(c.runs):
            rng = np.random.default_rng([cfg.seed, _CORPUS_STIMULUS, c_id, r])
            scenes = world.make_scenes(rng, c.trs * p.tr, small)
            n_frames = c.trs * per_tr
            frames = world.render_segment(scenes, n_frames, small)
            table = world.frame_table(scenes, n_frames, small)
            drive = brain_model.neural_drive(b, brain_model.stimulus_features(frames), table)
            bolds.append(brain_model.bold_response(b, drive, cfg.world.fps, p.tr))
        for r, signal in enumerate(_standardised_signal(b, bolds)):
            rng = np.random.default_rng([cfg.seed, _CORPUS_NOISE, c_id, r])
            data = _runs_to_cifti(signal, b, cfg, rng)
            write_dtseries(hcp_path(root, sid, r + 1), data, p.tr, axis)
            tick(1, f"corpus {sid} run {r + 1}")
    if ids:
        # The template's visual bands, with a margin for individual variation.
        order = brain_model.hilbert_order(side)
        u = (order // side + 0.5) / side
        visual_edge = brain_model.REGION_BANDS["category"][1] + 2 * cfg.brain.boundary_jitter
        mask = np.concatenate([u < visual_edge, u < visual_edge])
        np.save(root / "hcp" / "roi_mask.npy", mask)
    return ids
