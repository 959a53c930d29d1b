"""Finished runs carried between tracking stores: `mvbench export` writes them to a folder,
`mvbench import` logs them into another store, where `mvbench run` skips them and
`mvbench report` reads them like runs computed there."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import tracking as T
from harness.plan import Plan
from harness.tracking import Tracker
from mindvideo.errors import ConfigError

FORMAT = "mvbench-runs"
VERSION = 1
MANIFEST = "mvbench-runs.json"
RUNS = "runs"  # <folder>/runs/<run key>/{run.json, artifacts/}
IMPORTED_FROM = "mvbench.imported_from"  # tag of an imported run: the store it was computed in
# Artifacts kept by `--artifacts scores`: the config, the evaluation's scores and the
# per-sample scores of the paired tests; `report` adds the clips of the sample grid (the
# report reads nothing else but metrics); `all` keeps every artifact (GIFs, contact sheet).
ARTIFACTS = {
    "scores": ("config.yaml", "scores.json", "per_sample.npz"),
    "report": ("config.yaml", "scores.json", "per_sample.npz", "samples/samples.npz"),
    "all": None,
}
# MLflow's own tags, set again by MLflow when a run is created.
_MLFLOW_OWN = ("mlflow.user", "mlflow.source.", "mlflow.runName", T.PARENT)


@dataclass
class Imported:
    suite: str
    profile: str
    spec: str
    overrides: list[str]
    added: list[str] = field(default_factory=list)  # run keys logged into the store
    present: list[str] = field(default_factory=list)  # run keys the store had finished already


def _read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(
            f"{path}: not a readable run export ({e}); export the runs again"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{path}: not an `mvbench export` manifest (no format {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise ConfigError(
            f"{path}: export format version {manifest.get('version')!r}; this mvbench reads "
            f"version {VERSION}: export the runs again with this version"
        )
    if not isinstance(manifest.get("runs"), dict):
        raise ConfigError(f"{path}: key `runs` must map run keys to run labels")
    if not isinstance(manifest.get("suite"), str):
        raise ConfigError(f"{path}: key `suite` must name the suite; export the runs again")
    return manifest


def export_runs(
    plan: Plan, tracker: Tracker, out: Path, overrides: list[str], artifacts: str = "all"
) -> tuple[list[str], list[str]]:
    """Write the plan's finished runs under `out` (adding to an earlier export of the same suite
    there); returns (exported run keys, labels of planned runs with no finished run)."""
    if artifacts not in ARTIFACTS:
        raise ConfigError(f"--artifacts {artifacts!r}: choose one of {', '.join(ARTIFACTS)}")
    out = Path(out)
    manifest = _read_manifest(out)
    if manifest is None:
        if out.exists() and any(out.iterdir()):
            raise ConfigError(
                f"{out}: the folder holds files but no {MANIFEST}; export into a new or empty "
                "folder, or into an earlier export of the same suite"
            )
        manifest = {"format": FORMAT, "version": VERSION, "suite": plan.suite, "runs": {}}
    elif manifest.get("suite") != plan.suite or manifest.get("profile") != plan.spec.profile:
        raise ConfigError(
            f"{out / MANIFEST}: holds runs of suite {manifest.get('suite')!r} "
            f"({manifest.get('profile')}); export {plan.suite!r} ({plan.spec.profile}) to "
            "another folder"
        )
    elif sorted(manifest.get("overrides", [])) != sorted(overrides):
        raise ConfigError(
            f"{out / MANIFEST}: its runs were exported with --set "
            f"{' '.join(manifest.get('overrides', [])) or '(none)'}, these with --set "
            f"{' '.join(overrides) or '(none)'}; export them to another folder"
        )
    exp = tracker.experiment(plan.suite, create=False)
    latest = tracker.latest_finished(exp) if exp is not None else {}
    todo = [run for run in plan.runs if run.key in latest]
    missing = [run.label for run in plan.runs if run.key not in latest]
    if not todo:
        raise ConfigError(
            f"suite {plan.suite!r} ({plan.spec.profile}): none of its {len(plan.runs)} runs has "
            f"finished in {tracker.uri}; nothing to export"
        )
    runs_dir = out / RUNS
    runs_dir.mkdir(parents=True, exist_ok=True)
    for run in todo:
        _export_one(tracker, latest[run.key], run.key, runs_dir, artifacts)
        manifest["runs"][run.key] = run.label
    manifest |= {
        "profile": plan.spec.profile,
        "spec": str(plan.spec.path),
        "spec_hash": plan.spec.hash,
        "overrides": list(overrides),
        "exported_from": tracker.uri,
        "git_commit": T.git_commit(),
        "exported": time.strftime("%Y-%m-%d %H:%M:%S"),
        "runs": dict(sorted(manifest["runs"].items(), key=lambda kv: kv[1])),
    }
    _write_json(out / MANIFEST, manifest)
    return [run.key for run in todo], missing


def _export_one(tracker: Tracker, child, key: str, runs_dir: Path, artifacts: str) -> None:
    """One run as runs_dir/<key>/: run.json (tags, params, metric histories) and artifacts/,
    written to a temporary folder first so an interrupted export leaves the old copy whole."""
    client = tracker.client
    run_id = child.info.run_id
    metrics = {
        name: [[m.step, m.value, m.timestamp] for m in client.get_metric_history(run_id, name)]
        for name in sorted(child.data.metrics)
    }
    record = {
        "run_key": key,
        "run_name": child.info.run_name,
        "status": child.info.status,
        "start_time": child.info.start_time,
        "end_time": child.info.end_time,
        "source_run_id": run_id,
        "tags": {k: v for k, v in sorted(child.data.tags.items()) if not k.startswith(_MLFLOW_OWN)},
        "params": dict(sorted(child.data.params.items())),
        "metrics": metrics,
    }
    final = runs_dir / key
    with tempfile.TemporaryDirectory(dir=runs_dir, prefix=f".{key}.") as tmp:
        folder = Path(tmp) / key
        (folder / "artifacts").mkdir(parents=True)
        _write_json(folder / "run.json", record)
        wanted = ARTIFACTS[artifacts]
        for path in _artifact_paths(client, run_id):
            if wanted is not None and path not in wanted:
                continue
            dst = (folder / "artifacts" / path).parent
            dst.mkdir(parents=True, exist_ok=True)
            client.download_artifacts(run_id, path, str(dst))
        if final.exists():
            shutil.rmtree(final)
        folder.rename(final)


def _artifact_paths(client, run_id: str, path: str | None = None) -> list[str]:
    """Every artifact file of a run, as paths relative to its artifact root."""
    out: list[str] = []
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            out += _artifact_paths(client, run_id, item.path)
        else:
            out.append(item.path)
    return out


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    tmp.replace(path)


def import_runs(tracker: Tracker, folder: Path) -> Imported:
    """Log the runs exported to `folder` into the tracker's store, under their suite's
    experiment and one parent run; runs whose key the store has finished already are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder; give a folder written by `mvbench export`")
    manifest = _read_manifest(folder)
    if manifest is None:
        raise ConfigError(
            f"{folder}: no {MANIFEST}; give a folder written by `mvbench export SPEC --out DIR`"
        )
    records = [_read_record(folder, key) for key in manifest["runs"]]
    suite = str(manifest.get("suite"))
    done = Imported(
        suite,
        str(manifest.get("profile")),
        str(manifest.get("spec")),
        manifest.get("overrides", []),
    )
    exp = tracker.experiment(suite)
    have = tracker.latest_finished(exp)
    todo = [r for r in records if r["run_key"] not in have]
    done.present = [r["run_key"] for r in records if r["run_key"] in have]
    if not todo:
        return done
    parent = tracker.start_parent(
        exp,
        {
            T.SPEC_HASH: str(manifest.get("spec_hash", "")),
            IMPORTED_FROM: str(manifest.get("exported_from", "")),
            "mvbench.import_folder": str(folder.resolve()),
        },
        what="import",
    )
    try:
        for record in todo:
            _import_one(tracker, exp, parent, record, folder / RUNS / record["run_key"], manifest)
            done.added.append(record["run_key"])
    except BaseException:
        tracker.end(parent, "FAILED")
        raise
    tracker.end(parent, "FINISHED")
    return done


def _read_record(folder: Path, key: str) -> dict:
    path = folder / RUNS / key / "run.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: missing, but {folder / MANIFEST} lists run {key}; export the runs again"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not readable ({e}); export the runs again") from None
    need = ("run_key", "tags", "params", "metrics", "start_time", "end_time")
    lacking = [k for k in need if k not in record] if isinstance(record, dict) else list(need)
    if lacking:
        raise ConfigError(f"{path}: lacks {', '.join(lacking)}; export the runs again")
    if not all(isinstance(record[k], dict) for k in ("tags", "params", "metrics")):
        raise ConfigError(f"{path}: tags, params and metrics must be mappings; export again")
    if record["run_key"] != key or record["tags"].get(T.RUN_KEY) != key:
        raise ConfigError(f"{path}: holds run {record['run_key']!r}, not {key!r}")
    return record


def _import_one(
    tracker: Tracker, exp: str, parent: str, record: dict, folder: Path, manifest: dict
) -> None:
    from mlflow.entities import Metric, Param

    client = tracker.client
    tags = dict(record["tags"])
    tags |= {
        T.PARENT: parent,
        IMPORTED_FROM: str(manifest.get("exported_from", "")),
        "mvbench.source_run_id": str(record.get("source_run_id", "")),
    }
    run = client.create_run(
        exp,
        run_name=record.get("run_name"),
        start_time=record["start_time"],
        tags={k: str(v)[: T.MAX_TAG_CHARS] for k, v in tags.items()},
    )
    run_id = run.info.run_id
    try:
        metrics = [
            Metric(name, float(value), int(stamp), int(step))
            for name, history in record["metrics"].items()
            for step, value, stamp in history
        ]
        params = [Param(k, str(v)) for k, v in record["params"].items()]
        # MLflow takes at most 1,000 metric values and 100 params per batch
        for i in range(0, max(len(metrics), 1), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i : i + 100])
        artifacts = folder / "artifacts"
        if artifacts.is_dir() and any(artifacts.iterdir()):
            client.log_artifacts(run_id, str(artifacts))
    except BaseException as e:
        client.set_tag(run_id, T.ERROR, f"import failed: {type(e).__name__}: {e}"[:5000])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED", end_time=record["end_time"])
