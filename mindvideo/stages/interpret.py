"""Stage `interpret`: where the fMRI encoder's attention goes, per brain region, after each
training stage (MinD-Video's attention analysis).

For one subject, the encoder as each training stage left it (`mbm`: the MBM transformer, as it
initialises the encoder, fine-tuned on the subject where mbm_finetune ran; `contrastive`;
`cotrain` when co-training ran) reads the subject's test
fMRI windows (eval mode, no gradients: nothing is random). In every transformer layer the
spatial self-attention over the voxel patches of each window frame gives, per key patch, the
attention mass it receives: its attention weight averaged over queries, heads, window frames
and test windows (the masses of a layer sum to 1). A patch holds `patch_size` consecutive voxels
of the encoder's input (the voxel vector wrap-padded to a multiple of the patch size, as the
encoder pads it), so its mass is shared among brain regions by the share of its voxels in each.
Per layer and region: the mass fraction, and the enrichment = mass fraction / the region's
share of the input positions (its voxel fraction, counting the wrapped voxels): 1.0 is what
uniform attention gives, above 1 the layer attends to the region more than its size.

The temporal attention (over the frames of the window, per patch) has frames, not patches, as
its keys, so it says nothing about regions: it is left out of the region analysis, and only the
mass each window frame receives (averaged over queries, heads, patches and windows) is kept in
attention.json.

Regions: on SynthCC the simulator's ground truth (truth/<subject>.npz, the region of every
cortical vertex: early_visual, colour_shape, motion, category, non_visual); on real data a CIFTI
label map (`interpret.parcellation`, a `.dlabel.nii` such as the Yeo 2011 networks), matched to
the fMRI's cortical grayordinates by surface vertex. The encoder reads cortical vertices only,
so subcortical voxels never enter; only regions with voxels among the encoder's are reported.
Metrics: `<stage>.<layer>.<region>` the enrichment (layers L1..L<depth>), and
`voxel_fraction.<region>`; files: attention.json (every number) and attention.png.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mindvideo.data.paired import PAIRING_KEY_NEUTRAL, PairingConfig, pairing
from mindvideo.errors import ConfigError, DataError
from mindvideo.stages.base import Stage, StageContext, StageResult, dataset_root

if TYPE_CHECKING:
    import torch

    from mindvideo.models.fmri_encoder import FmriEncoder

TRAINING_STAGES = ("mbm", "contrastive", "cotrain")  # in training order
RESULTS_FILE = "attention.json"
FIGURE_FILE = "attention.png"
# Attention weights materialised at once (elements): rows of a batch are taken in chunks.
MAX_WEIGHTS = 2**26


class InterpretOptions(BaseModel):
    """The analysis: the profile's `interpret` section (less `enabled`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parcellation: str | None = Field(
        None,
        description="a CIFTI dlabel (.dlabel.nii) of brain regions on the fMRI's surface mesh "
        "(e.g. the Yeo 2011 networks); needed on real data; on SynthCC it replaces the "
        "simulator's ground-truth regions",
    )
    batch_size: int = Field(64, ge=1, le=65_536, description="test windows per forward pass")
    max_windows: int | None = Field(
        None, ge=1, description="test windows analysed, evenly spaced (None: all)"
    )


class InterpretConfig(InterpretOptions, PairingConfig):
    """The analysis and the subject's data."""

    synthetic: bool = Field(True, description="SynthCC: its ground-truth regions are known")


def work_units(cfg: InterpretConfig) -> int:
    return 2 + len(TRAINING_STAGES)


# --- the computation: attention mass per key patch, then per region ---------------------------


def key_mass(weights: torch.Tensor) -> torch.Tensor:
    """Attention weights (..., queries, keys) -> the mass each key receives, averaged over the
    queries and every leading axis: (keys,), summing to 1."""
    return weights.reshape(-1, weights.shape[-1]).double().mean(dim=0)


def patch_shares(voxel_region: np.ndarray, n_regions: int, patch_size: int) -> np.ndarray:
    """(patches, regions): the share of each patch's voxels in each region. `voxel_region`
    (voxels,) is the region index of each input voxel; the vector is wrap-padded to a multiple
    of patch_size as the encoder pads it (the first voxels repeat at the end)."""
    voxel_region = np.asarray(voxel_region)
    n = len(voxel_region)
    if n == 0:
        raise ValueError("no voxels")
    patches = math.ceil(n / patch_size)
    position = np.arange(patches * patch_size) % n  # the voxel at each padded position
    onehot = np.zeros((patches * patch_size, n_regions))
    onehot[np.arange(len(position)), voxel_region[position]] = 1.0
    return onehot.reshape(patches, patch_size, n_regions).mean(axis=1)


@dataclass
class RegionMass:
    """Per region: the attention mass, the share of the input positions, and their ratio."""

    mass: np.ndarray  # (regions,) sums to 1
    input_fraction: np.ndarray  # (regions,) what uniform attention gives; sums to 1
    enrichment: np.ndarray  # (regions,) mass / input_fraction; 1 = uniform


def region_mass(mass: np.ndarray, shares: np.ndarray) -> RegionMass:
    """Distribute the mass of each key patch (patches,) to regions by `shares` (patches,
    regions)."""
    mass = np.asarray(mass, dtype=np.float64)
    if mass.shape[0] != shares.shape[0]:
        raise ValueError(f"{mass.shape[0]} patch masses for {shares.shape[0]} patches")
    per_region = mass @ shares
    fraction = shares.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        enrichment = np.where(fraction > 0, per_region / fraction, np.nan)
    return RegionMass(per_region, fraction, enrichment)


def attention_mass(
    encoder: FmriEncoder, fmri: np.ndarray, batch_size: int, device: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """The encoder's attention over (n, window, voxels) fMRI, layer by layer: the mass each
    key patch receives in the spatial attention (depth, patches), averaged over queries,
    heads, window frames and windows; and the mass each window frame receives in the temporal
    attention (depth, window), or None without temporal attention."""
    import torch

    depth = len(encoder.blocks)
    spatial = [torch.zeros((), dtype=torch.float64) for _ in range(depth)]
    temporal = [torch.zeros((), dtype=torch.float64) for _ in range(depth)]
    rows = [0] * depth
    temporal_rows = [0] * depth

    def received(attn, x: torch.Tensor) -> torch.Tensor:
        """Sum over the rows of x (rows, tokens, dim) of the mass each key token receives,
        averaged over queries and heads: (tokens,)."""
        tokens = x.shape[1]
        chunk = max(1, MAX_WEIGHTS // (attn.num_heads * tokens * tokens))
        total = torch.zeros(tokens, dtype=torch.float64)
        for i in range(0, len(x), chunk):
            w = attn.weights(x[i : i + chunk])  # (rows, heads, queries, keys)
            total += w.mean(dim=(1, 2), dtype=torch.float64).sum(dim=0).cpu()
        return total

    def spatial_hook(layer: int):
        def hook(module, args):
            spatial[layer] = spatial[layer] + received(module, args[0])  # x: (n*w, p, b)
            rows[layer] += len(args[0])

        return hook

    def temporal_hook(layer: int):
        def hook(module, args):
            temporal[layer] = temporal[layer] + received(module, args[0])  # x: (n*p, w, b)
            temporal_rows[layer] += len(args[0])

        return hook

    handles = []
    for i, block in enumerate(encoder.blocks):
        handles.append(block.attn.register_forward_pre_hook(spatial_hook(i)))
        if block.temporal:
            handles.append(block.temporal_attn.register_forward_pre_hook(temporal_hook(i)))
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(fmri), batch_size):
                x = np.ascontiguousarray(fmri[i : i + batch_size])
                encoder.features(torch.from_numpy(x).to(device))  # the hooks record
    finally:
        for h in handles:
            h.remove()
        encoder.train(was_training)
    if not rows[0]:
        raise DataError("no fMRI windows to analyse")
    mass = np.stack([(s / r).numpy() for s, r in zip(spatial, rows, strict=True)])
    if not any(temporal_rows):
        return mass, None
    return mass, np.stack([(t / r).numpy() for t, r in zip(temporal, temporal_rows, strict=True)])


# --- regions ------------------------------------------------------------------------------------


@dataclass
class Regions:
    """A region per cortical vertex: names, and each vertex's index into them."""

    names: list[str]
    label: np.ndarray  # (cortical vertices,) index into names
    source: str  # where they come from, for the record


def metric_name(name: str, key: int | None = None) -> str:
    """A region name usable in a metric name (letters, digits, _ and -; no dots)."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    if safe:
        return safe
    return "unlabelled" if key in (None, 0) else f"label{key}"


def synth_regions(dataset: Path, subject: str) -> Regions:
    """SynthCC's ground truth: the simulated region of every cortical vertex."""
    truth = dataset / "truth"
    path = truth / f"{subject}.npz"
    if not path.exists() or not (truth / "summary.json").exists():
        raise DataError(
            f"{path}: no ground-truth regions (SynthCC writes truth/<subject>.npz and "
            "truth/summary.json); re-simulate the dataset or give interpret.parcellation"
        )
    names = json.loads((truth / "summary.json").read_text())["regions"]
    with np.load(path) as z:
        label = np.asarray(z["region"], dtype=np.int64)
    return Regions([metric_name(n) for n in names], label, f"SynthCC ground truth ({path})")


def parcellation_regions(path: Path, rec) -> Regions:
    """The regions of a CIFTI dlabel, on the cortical grayordinates of a subject's fMRI."""
    from mindvideo.data.cifti import read_dlabel, surface_points

    if rec.preprocessed:
        raise DataError(
            f"{rec.root / rec.subject}: MinD-Video's preprocessed arrays carry no surface "
            f"vertices, so the parcellation {path} cannot be placed on their voxels; "
            "interpretation by region needs the release's CIFTI runs (data.source: cc2017)"
        )
    first = next(p for split in rec.runs.values() for paths in split.values() for p in paths)
    parc = read_dlabel(path)
    keys = parc.on(surface_points(first), first)
    order = sorted(parc.names)
    names: list[str] = []
    for k in order:
        name = metric_name(parc.names[k], k)
        names.append(name if name not in names else f"{name}_{k}")
    index = {k: i for i, k in enumerate(order)}
    return Regions(names, np.array([index[int(k)] for k in keys]), f"parcellation {path}")


def subject_regions(cfg: InterpretConfig, dataset: Path, rec, n_cortical: int) -> Regions:
    if cfg.parcellation:
        regions = parcellation_regions(Path(cfg.parcellation), rec)
    elif cfg.synthetic:
        regions = synth_regions(dataset, cfg.subject)
    else:
        raise ConfigError(
            "interpret.parcellation is not set: on real data the attention analysis needs brain "
            "regions; give a CIFTI label map (.dlabel.nii, e.g. the Yeo 2011 networks) on the "
            "fMRI's surface mesh (in the profile, or --set interpret.parcellation=/path)"
        )
    if len(regions.label) != n_cortical:
        raise DataError(
            f"{regions.source}: {len(regions.label)} vertices labelled but the fMRI of "
            f"{cfg.subject} has {n_cortical} cortical grayordinates"
        )
    return regions


# --- the encoders of each training stage ------------------------------------------------------


def stage_encoders(
    inputs: Mapping[str, Path], device: str, seed: int
) -> tuple[dict[str, FmriEncoder], np.ndarray]:
    """The encoder after each training stage present in `inputs`, in training order, and the
    voxels they read. The mbm stage's MAE becomes the encoder it initialises (spatial blocks
    only: a fresh temporal attention adds nothing before training)."""
    import torch

    from mindvideo.models.encoder_config import EncoderConfig
    from mindvideo.models.fmri_encoder import FmriEncoder, load_encoder
    from mindvideo.models.fmri_mae import load_mbm

    contrastive, voxels = load_encoder(inputs["contrastive"], device)
    encoders: dict[str, FmriEncoder] = {}
    if "mbm" in inputs:
        mae = load_mbm(inputs["mbm"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the layers MBM does not have; they do not enter attention
            spatial = EncoderConfig(temporal_attention=False)
            encoder = FmriEncoder(mae.cfg, spatial, contrastive.n_voxels, contrastive.window)
        encoder.load_mbm(mae)
        encoders["mbm"] = encoder.to(device).eval()
    encoders["contrastive"] = contrastive
    if "cotrain" in inputs:
        cotrained, cotrain_voxels = load_encoder(inputs["cotrain"], device)
        if not np.array_equal(cotrain_voxels, voxels):
            raise DataError(
                f"{inputs['cotrain']}: the co-trained encoder reads other voxels than the "
                f"contrastive one ({inputs['contrastive']}); they must come from one run"
            )
        encoders["cotrain"] = cotrained
    return encoders, voxels


def evenly(n: int, k: int | None) -> np.ndarray:
    if k is None or k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def run(
    cfg: InterpretConfig, inputs: Mapping[str, Path], out: Path, ctx: StageContext
) -> StageResult:
    from mindvideo.data.cc2017 import open_stimuli, open_subject
    from mindvideo.data.paired import subject_windows

    out = Path(out)
    dataset = dataset_root(inputs["dataset"])
    rec = open_subject(dataset, cfg.subject, cfg.val_segments)
    regions = subject_regions(cfg, dataset, rec, rec.check()[1])
    encoders, voxels = stage_encoders(inputs, ctx.device, ctx.seed)
    _, _, test = subject_windows(dataset, cfg, open_stimuli(dataset), voxels=voxels)
    fmri = test.fmri[evenly(len(test), cfg.max_windows)]  # (n, window, voxels)

    # the regions the encoder's voxels fall in, in the source's order
    present = np.unique(regions.label[voxels])
    names = [regions.names[i] for i in present]
    voxel_region = np.searchsorted(present, regions.label[voxels])
    counts = np.bincount(voxel_region, minlength=len(names))
    ctx.progress(1, f"{cfg.subject}: {len(fmri)} test windows, {len(names)} regions")

    results: dict = {
        "subject": cfg.subject,
        "regions": names,
        "region_source": regions.source,
        "voxels": dict(zip(names, counts.tolist(), strict=True)),
        "voxel_fraction": dict(zip(names, (counts / counts.sum()).tolist(), strict=True)),
        "windows": len(fmri),
        "stages": {},
    }
    metrics: dict[str, float] = {"windows": float(len(fmri))}
    metrics |= {f"voxel_fraction.{n}": float(f) for n, f in results["voxel_fraction"].items()}
    for stage in TRAINING_STAGES:
        encoder = encoders.get(stage)
        if encoder is None:
            ctx.progress(1, f"{stage}: not in this run")
            continue
        patch_size = encoder.mae_cfg.patch_size
        shares = patch_shares(voxel_region, len(names), patch_size)
        spatial, temporal = attention_mass(encoder, fmri, cfg.batch_size, ctx.device)
        layers = {}
        for i, mass in enumerate(spatial):
            found = region_mass(mass, shares)
            layer = f"L{i + 1}"
            layers[layer] = {
                "mass": dict(zip(names, found.mass.tolist(), strict=True)),
                "enrichment": dict(zip(names, found.enrichment.tolist(), strict=True)),
                "temporal_frame_mass": None if temporal is None else temporal[i].tolist(),
            }
            metrics |= {
                f"{stage}.{layer}.{n}": float(e)
                for n, e in zip(names, found.enrichment, strict=True)
            }
        results["stages"][stage] = {
            "patch_size": patch_size,
            "patches": int(shares.shape[0]),
            "input_fraction": dict(zip(names, shares.mean(axis=0).tolist(), strict=True)),
            "layers": layers,
        }
        ctx.progress(1, f"{stage}: {len(layers)} layers")

    (out / RESULTS_FILE).write_text(json.dumps(results, indent=1) + "\n")
    plot_enrichment(results, out / FIGURE_FILE)
    ctx.progress(1, f"{RESULTS_FILE}, {FIGURE_FILE} written")
    return StageResult(metrics=metrics, artifacts=[Path(RESULTS_FILE), Path(FIGURE_FILE)])


def plot_enrichment(results: dict, path: Path) -> None:
    """One panel per layer: the enrichment per region (x), a bar per training stage, a dashed
    line at 1 (uniform attention)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names, stages = results["regions"], list(results["stages"])
    depth = max(len(s["layers"]) for s in results["stages"].values())
    columns = min(depth, 4)
    rows = math.ceil(depth / columns)
    width = max(4.0, 0.45 * len(names) * len(stages) + 1.5)
    fig = Figure(figsize=(width * columns, 2.8 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    bar = 0.8 / len(stages)
    x = np.arange(len(names))
    for i, ax in enumerate(axes):
        if i >= depth:
            ax.set_visible(False)
            continue
        layer = f"L{i + 1}"
        for j, stage in enumerate(stages):
            found = results["stages"][stage]["layers"].get(layer)
            if found is None:
                continue
            values = [found["enrichment"][n] for n in names]
            ax.bar(x - 0.4 + bar * (j + 0.5), values, bar, label=stage, color=f"C{j}")
        ax.axhline(1.0, linestyle="--", color="0.3", linewidth=1)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize="small")
        ax.set_title(f"layer {layer}", fontsize="medium")
        ax.set_ylabel("enrichment (mass / voxel share)")
        if i == 0:
            ax.legend(fontsize="small")
    fig.suptitle(f"spatial attention per region, {results['subject']}")
    fig.savefig(path, dpi=120)


class InterpretSection(InterpretOptions):
    """The profile's `interpret` section."""

    enabled: bool = Field(
        False,
        description="true: after the encoder's training, its attention per brain region after "
        "each training stage (the interpret stage)",
    )


def configure(profile, subject: str) -> InterpretConfig:
    data = profile.data
    if data.source != "synth" and profile.required("interpret.parcellation") is None:
        raise ConfigError(
            f"{profile.source}: interpret.parcellation is not set: on {data.source} data the "
            "attention analysis needs brain regions; give a CIFTI label map (.dlabel.nii, "
            "e.g. the Yeo 2011 networks) on the fMRI's surface mesh, in the profile or with "
            "--set interpret.parcellation=/path/to/file.dlabel.nii"
        )
    return InterpretConfig(
        **profile.interpret.model_dump(exclude={"enabled"}),
        **pairing(data, subject),
        synthetic=data.source == "synth",
    )


STAGE = Stage(
    name="interpret",
    run=run,
    config=InterpretConfig,
    configure=configure,
    version=1,
    order=80,
    inputs=("dataset", "mbm", "contrastive", "cotrain"),
    # encoder.init: mbm; cotrain.enabled
    optional_inputs=("mbm", "cotrain"),
    enabled=lambda profile: profile.method == "mindvideo" and profile.interpret.enabled,
    pinned={"contrastive": "contrastive"},  # the encoder as trained, not through the adapter
    sections={"interpret": InterpretSection},
    reads=("data",),
    # deterministic given the encoders, which are per seed
    seeded=True,
    artifacts=(RESULTS_FILE, FIGURE_FILE),
    work_units=work_units,
    # options added after results were cached
    key_neutral=dict(PAIRING_KEY_NEUTRAL),
    local_paths=lambda profile: {"interpret.parcellation": "file"},
)
