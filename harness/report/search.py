"""`mvbench report` of a search: its trials, read from the Optuna storage and MLflow, as tables
(best first), the optimisation history, parameter importances and intermediate values."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from harness import tracking as T
from harness.report.figures import DPI, _figure
from harness.search import storage as S
from harness.search.spec import SPLIT_KEY, LoadedSearch
from harness.search.trials import STUDY_RUN_ATTR, TRIAL, TRIAL_NUMBER
from harness.tracking import Tracker
from mindvideo.errors import ConfigError

STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2, "RUNNING": 3, "WAITING": 4}
STATE_COLORS = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange", "FAIL": "tab:red"}
BEST_SHOWN = 5  # rows of the best-trials table (single objective; all of a Pareto front)


def load_study(loaded: LoadedSearch, store: Path, storage_url: str | None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage_url is None and not S.journal_path(store, loaded.study).exists():
        raise ConfigError(
            f"study {loaded.study!r} has no trials in {S.journal_path(store, loaded.study)}; "
            f"run it first: mvbench search {loaded.path} (or give --store / --storage)"
        )
    storage = S.open_storage(storage_url, store, loaded.study, loaded.search.retries)
    try:
        return optuna.load_study(study_name=loaded.study, storage=storage)
    except KeyError:
        raise ConfigError(
            f"study {loaded.study!r} is not in {S.shown(storage_url or '') or 'the journal'}; "
            f"run it first: mvbench search {loaded.path}"
        ) from None


def status_lines(study, loaded: LoadedSearch, store: Path, database: bool) -> list[str]:
    """`mvbench status SEARCH_SPEC`: the study's trial counts, each running or waiting trial
    with its worker's state (the lease on journal storage, the process on this host), and the
    best trials so far."""
    import datetime as dt

    from harness.tracking import worker_alive

    trials = study.get_trials(deepcopy=False)
    counts = {state: 0 for state in STATE_ORDER}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    target = study.user_attrs.get("n_trials")
    done = counts["COMPLETE"] + counts["PRUNED"]
    lines = [
        f"study {loaded.study}: {done}{f'/{target}' if target else ''} trials done "
        f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned), {counts['FAIL']} failed, "
        f"{counts['RUNNING']} running, {counts['WAITING']} waiting"
    ]
    now = dt.datetime.now()
    for t in trials:
        if t.state.name not in ("RUNNING", "WAITING"):
            continue
        params = ", ".join(f"{k}={_cell(v)}" for k, v in t.params.items())
        if t.state.name == "WAITING":
            retry = t.system_attrs.get("failed_trial")
            why = f"queued (retry of trial {retry})" if retry is not None else "queued"
            lines.append(f"  trial {t.number} WAITING: {why} [{params}]")
            continue
        worker = t.user_attrs.get(S.WORKER_ATTR, "?")
        if database:
            alive = worker_alive(worker)
            state = {True: "alive", False: "gone (the next worker retries it)"}.get(
                alive, "on another host (Optuna heartbeats)"
            )
        else:
            holder = S._trial_lease(store, study.study_name, t._trial_id).holder()
            if holder is None:
                state = "no lease (the next worker retries it)"
            elif holder.stale:
                state = f"{holder.stale} (the next worker retries it)"
            else:
                state = f"lease renewed {holder.age_s:.0f} s ago"
        since = f"{(now - t.datetime_start).total_seconds():.0f} s" if t.datetime_start else "?"
        lines.append(f"  trial {t.number} RUNNING for {since} on {worker}: {state} [{params}]")
    if counts["COMPLETE"]:
        for t in study.best_trials[:BEST_SHOWN]:
            values = ", ".join(_cell(v) for v in t.values)
            params = ", ".join(f"{k}={_cell(v)}" for k, v in t.params.items())
            lines.append(f"  best: trial {t.number} ({values}) [{params}]")
    return lines


def _mlflow_trials(tracker: Tracker, study) -> dict[int, object]:
    """The MLflow run of each trial (the latest, if a trial has several), by trial number."""
    exp = tracker.experiment(study.study_name, create=False)
    if exp is None:
        return {}
    parent = study.user_attrs.get(STUDY_RUN_ATTR)
    runs = tracker.runs(exp, f"tags.`{T.KIND}` = '{TRIAL}'")
    out: dict[int, object] = {}
    for r in runs:
        if parent and r.data.tags.get(T.PARENT) != parent:
            continue  # a study of the same name tracked before (another storage)
        number = r.data.tags.get(TRIAL_NUMBER, "")
        if number.isdigit():
            n = int(number)
            if n not in out or r.info.start_time > out[n].info.start_time:
                out[n] = r
    return out


def trials_frame(study, loaded: LoadedSearch, tracker: Tracker) -> pd.DataFrame:
    """One row per trial: number, state, objective values, parameters, duration, note (why it
    failed or where it was pruned), the trial it retries, its MLflow run and status."""
    tracked = _mlflow_trials(tracker, study)
    objective = list(loaded.search.objective)
    rows = []
    for t in study.get_trials(deepcopy=False):
        # a pruned trial's value in Optuna is its last intermediate value, not an objective
        values = t.values if t.state.name == "COMPLETE" else [math.nan] * len(objective)
        duration = t.user_attrs.get("seconds")
        if duration is None and t.datetime_start and t.datetime_complete:
            duration = (t.datetime_complete - t.datetime_start).total_seconds()
        # a retry carries its failed trial's user attributes: its error is not this trial's
        error = t.user_attrs.get(S.ERROR_ATTR) if t.state.name == "FAIL" else ""
        note = error or t.user_attrs.get("pruned_at") or ""
        if t.state.name == "FAIL" and not note:
            note = f"no heartbeat for {S.GRACE_S} s: worker lost"
        if t.system_attrs.get("failed_trial") is not None:
            note = "; ".join(
                filter(None, [f"retry of trial {t.system_attrs['failed_trial']}", note])
            )
        run = tracked.get(t.number)
        row = {
            "trial": t.number,
            "state": t.state.name,
            **dict(zip(objective, values, strict=False)),
            **{k: t.params.get(k) for k in loaded.search.space},
            "duration_s": duration,
            "note": note,
            "retry_of": t.system_attrs.get("failed_trial"),
            "mlflow_run_id": run.info.run_id if run is not None else None,
            "mlflow_status": run.info.status if run is not None else None,
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _best_order(frame: pd.DataFrame, loaded: LoadedSearch, pareto: set[int]) -> pd.DataFrame:
    """Complete trials best first (Pareto front first for several objectives), then pruned,
    failed, running and waiting ones by number."""
    first, direction = next(iter(loaded.search.objective.items()))
    key = frame[first] * (-1 if direction == "maximize" else 1)
    order = pd.DataFrame(
        {
            "state": frame["state"].map(STATE_ORDER).fillna(9),
            "front": [0 if n in pareto else 1 for n in frame["trial"]],
            "key": key.where(frame["state"] == "COMPLETE", np.inf),
            "trial": frame["trial"],
        }
    )
    return frame.loc[order.sort_values(["state", "front", "key", "trial"]).index]


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")


def _markdown(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
    return lines


def importances(study, loaded: LoadedSearch) -> tuple[dict[str, float], str]:
    """PED-ANOVA importance of each parameter for reaching the best trials (Optuna's default
    evaluator, no extra dependency), or ({}, why not)."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 3:
        return {}, f"needs 3 complete trials, the study has {len(complete)}"
    # the best quarter, at least 2 trials (PED-ANOVA wants 2 or more in the top set)
    quantile = min(0.5, max(0.25, 2 / len(complete)))
    evaluator = PedAnovaImportanceEvaluator(target_quantile=quantile)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as e:
        return {}, str(e)
    return {k: float(v) for k, v in found.items()}, ""


def _history(frame: pd.DataFrame, loaded: LoadedSearch, path: Path) -> bool:
    """Each trial's objective value by trial number, the best so far as a step line."""
    done = frame[frame["state"].isin(["COMPLETE", "PRUNED"])]
    objective = loaded.search.objective
    if frame[frame["state"] == "COMPLETE"].empty:
        return False
    fig, axes = _figure(6.0, 2.8 * len(objective), rows=len(objective))
    for ax, (metric, direction) in zip(axes, objective.items(), strict=True):
        points = done.dropna(subset=[metric])
        sns.scatterplot(
            data=points,
            x="trial",
            y=metric,
            hue="state",
            palette=STATE_COLORS,
            ax=ax,
            s=40,
        )
        complete = frame[frame["state"] == "COMPLETE"].sort_values("trial")
        if len(objective) == 1 and not complete.empty:
            values = complete[metric]
            best = values.cummax() if direction == "maximize" else values.cummin()
            ax.step(complete["trial"], best, where="post", color="0.3", label="best so far")
            ax.legend(fontsize=8)
        ax.set_ylabel(f"{metric} {'↑' if direction == 'maximize' else '↓'}")
    axes[-1].set_xlabel("trial")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_title(f"{loaded.study}: optimisation history")
    fig.savefig(path, dpi=DPI)
    return True


def _importance_figure(found: dict[str, float], study_name: str, path: Path) -> bool:
    if not found:
        return False
    data = pd.DataFrame({"parameter": list(found), "importance": list(found.values())})
    fig, (ax,) = _figure(5.5, 0.5 * len(found) + 1.4)
    sns.barplot(data=data, y="parameter", x="importance", color="tab:blue", ax=ax)
    ax.set_title(f"{study_name}: parameter importance (PED-ANOVA)")
    ax.set_ylabel("")
    fig.savefig(path, dpi=DPI)
    return True


def _intermediate(study, loaded: LoadedSearch, path: Path) -> bool:
    """The pruning metric per step of every trial that reported it; pruned trials dashed."""
    prune = loaded.search.prune_on
    rows = []
    for t in study.get_trials(deepcopy=False):
        for step, value in sorted(t.intermediate_values.items()):
            rows.append({"trial": t.number, "state": t.state.name, "step": step, "value": value})
    if prune is None or not rows:
        return False
    data = pd.DataFrame(rows)
    # reported in the objective's direction: negated when the two differ (see PruneReporter)
    data["value"] = loaded.search.prune_sign * data["value"]
    fig, (ax,) = _figure(6.0, 3.4)
    for (number, state), curve in data.groupby(["trial", "state"], sort=True):
        ax.plot(
            curve["step"],
            curve["value"],
            marker="o",
            markersize=3,
            linestyle="--" if state == "PRUNED" else "-",
            color=STATE_COLORS.get(state, "0.5"),
            alpha=0.8,
            label=f"trial {number}" if len(data["trial"].unique()) <= 10 else None,
        )
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{prune.metric} {'↑' if prune.resolved_direction == 'maximize' else '↓'}")
    ax.set_title(f"{loaded.study}: intermediate values (dashed: pruned)")
    if len(data["trial"].unique()) <= 10:
        ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=DPI)
    return True


def _pareto(frame: pd.DataFrame, loaded: LoadedSearch, pareto: set[int], path: Path) -> bool:
    """Two objectives against each other, the Pareto front marked."""
    names = list(loaded.search.objective)
    complete = frame[frame["state"] == "COMPLETE"]
    if len(names) < 2 or complete.empty:
        return False
    data = complete.assign(front=["Pareto front" if n in pareto else "" for n in complete["trial"]])
    fig, (ax,) = _figure(5.0, 4.0)
    sns.scatterplot(data=data, x=names[0], y=names[1], hue="front", ax=ax, s=40)
    ax.set_title(f"{loaded.study}: {names[0]} vs {names[1]}")
    fig.savefig(path, dpi=DPI)
    return True


def write_search_report(
    loaded: LoadedSearch, store: Path, storage_url: str | None, tracker: Tracker, out: Path
) -> list[Path]:
    """results/<study>/: table.md and table.csv (best first), figures/history.png,
    importance.png, intermediate.png (and pareto.png for several objectives)."""
    study = load_study(loaded, Path(store), storage_url)
    frame = trials_frame(study, loaded, tracker)
    if frame.empty:
        raise ConfigError(
            f"study {loaded.study!r} has no trials yet; run: mvbench search {loaded.path}"
        )
    complete = frame[frame["state"] == "COMPLETE"]
    pareto = {t.number for t in study.best_trials} if not complete.empty else set()
    ordered = _best_order(frame, loaded, pareto)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    written = []
    csv = out / "table.csv"
    ordered.to_csv(csv, index=False)
    written.append(csv)
    found, why = importances(study, loaded)
    md = out / "table.md"
    md.write_text(_table_md(study, loaded, ordered, pareto, found, why))
    written.insert(0, md)
    figures = out / "figures"
    if _history(frame, loaded, figures / "history.png"):
        written.append(figures / "history.png")
    if _importance_figure(found, loaded.study, figures / "importance.png"):
        written.append(figures / "importance.png")
    if _intermediate(study, loaded, figures / "intermediate.png"):
        written.append(figures / "intermediate.png")
    if _pareto(frame, loaded, pareto, figures / "pareto.png"):
        written.append(figures / "pareto.png")
    written.append(_page(loaded, tracker, out, md, written))
    return written


def _page(loaded: LoadedSearch, tracker: Tracker, out: Path, md: Path, written) -> Path:
    """index.html of the search: its tables, figures, spec and environment."""

    from harness.profiles import load_profile
    from harness.report.html import environment, write_index
    from harness.tracking import ui_command

    profile = load_profile(loaded.profile, dict(loaded.spec.overrides or {}))
    return write_index(
        out,
        f"search {loaded.study} ({loaded.profile} profile)",
        [f"Optuna study {loaded.study}; trials scored on the split its objective names."],
        md.read_text(encoding="utf-8"),
        None,
        [p for p in written if p.suffix == ".png"],
        Path(loaded.path).read_text(encoding="utf-8"),
        profile.model_dump(mode="json"),
        environment({}, {}),
        [],
        None,
        ui_command(tracker.uri),
        grid=False,
    )


def _table_md(study, loaded, ordered: pd.DataFrame, pareto, found, why) -> str:
    search = loaded.search
    spec = loaded.spec
    counts = ordered["state"].value_counts().to_dict()
    done = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
    target = study.user_attrs.get("n_trials") or search.trials
    objective = ", ".join(f"{m} ({d})" for m, d in search.objective.items())
    pruning = (
        f"pruner {search.pruner.type} on {search.prune_on.metric}"
        if search.prune_on
        else "no pruning"
    )
    split = spec.overrides.get(SPLIT_KEY, "test")
    if SPLIT_KEY in search.space:
        split = "per trial (eval.split is searched)"
    lines = [
        f"# Search: {loaded.study}",
        "",
        *([spec.description.strip(), ""] if spec.description.strip() else []),
        f"Profile {loaded.profile}; seeds {list(spec.seeds)}; subjects "
        f"{list(spec.subjects) if spec.subjects else 'all'}. Objective: {objective}, the "
        f"{search.aggregate} over each trial's runs, scored on the {split} split. Sampler "
        f"{search.sampler.type} (seed {search.sampler.seed}); {pruning}. {done}"
        + (f"/{target}" if target else "")
        + f" trials done: {counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} "
        f"pruned; {counts.get('FAIL', 0)} failed"
        + (f", {counts.get('RUNNING', 0)} running" if counts.get("RUNNING") else "")
        + ".",
        "",
    ]
    params = list(search.space)
    columns = ["trial", *search.objective, *params, "duration_s"]
    complete = ordered[ordered["state"] == "COMPLETE"]
    if len(search.objective) > 1:
        best = complete[complete["trial"].isin(pareto)]
        lines += ["## Best trials (the Pareto front)", ""]
    else:
        best = complete.head(BEST_SHOWN)
        lines += [f"## Best trials (top {min(BEST_SHOWN, len(complete))} of {len(complete)})", ""]
    lines += _markdown(best, columns) if not best.empty else ["(no complete trial yet)"]
    lines += ["", "## Parameter importance (PED-ANOVA)", ""]
    if found:
        lines += ["| parameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in found.items()]
    else:
        lines.append(f"(not computed: {why})")
    lines += ["", "## All trials", ""]
    columns = ["trial", "state", *search.objective, *params, "duration_s", "note"]
    lines += _markdown(ordered, columns)
    return "\n".join(lines) + "\n"
