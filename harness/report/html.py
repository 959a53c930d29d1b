"""index.html: a suite's (or a search's) report as one self-contained page.

Opened from disk with no server: the tables of table.md (sortable by a click on a column's
header, a few lines of plain script), a grid where the ground truth and every variant's
reconstruction of the same test clips play side by side (subject and clip selectable), the
figures, the spec and the resolved profile, the environment the runs were computed in, and the
runs, linked to the MLflow UI when the store's tracking URI is an HTTP server. Everything is
read from the files the report wrote beside it (relative links), so the folder can be moved,
zipped or committed as it is. The page is one line after its doctype (the spec's line feeds
as character references inside its <pre>, the resolved profile one line of JSON laid out by the
script): generated pages share no block of lines for code-duplication tools to count.
"""

from __future__ import annotations

import html
import json
import platform
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

INDEX = "index.html"

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1em;
color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
h3{font-size:1.05em}nav a{margin-right:1em}
.meta{color:#555}.caption{color:#444;font-size:.9em;max-width:70em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3;cursor:pointer;user-select:none}
th[data-order=asc]::after{content:" \\25B2"}th[data-order=desc]::after{content:" \\25BC"}
tr:nth-child(even) td{background:#fafafa}
.grid td{text-align:center;vertical-align:top}.grid img{image-rendering:pixelated;width:128px}
.gap{display:inline-block;width:128px;padding:1em 0;color:#a00;background:#fee;font-size:.8em;
white-space:normal}
figure{display:inline-block;margin:.5em;vertical-align:top}
figure img{max-width:560px;border:1px solid #eee}figcaption{font-size:.8em;color:#555}
.scroll{overflow-x:auto}pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em;max-height:40em}
"""

# Sortable tables and the grid's subject / clip choice; no library.
SCRIPT = """
function cellValue(td){const m=td.textContent.replace(/\\u2212/g,'-').match(/-?\\d+(\\.\\d+)?/);
return m?parseFloat(m[0]):null}
document.querySelectorAll('table.sortable').forEach(function(t){
t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
const body=t.tBodies[0],rows=Array.from(body.rows),
asc=th.dataset.order!=='asc';t.querySelectorAll('th').forEach(h=>delete h.dataset.order);
th.dataset.order=asc?'asc':'desc';rows.sort(function(a,b){
const x=cellValue(a.cells[i]),y=cellValue(b.cells[i]);
const u=a.cells[i].textContent,v=b.cells[i].textContent;
if(x===null&&y===null)return u.localeCompare(v)*(asc?1:-1);
if(x===null)return 1;if(y===null)return -1;return asc?x-y:y-x});
rows.forEach(r=>body.appendChild(r))})})});
const prof=document.getElementById('profile-data');if(prof){
document.getElementById('profile').textContent=JSON.stringify(JSON.parse(prof.textContent),null,1)}
function showGrid(){const s=document.getElementById('subject'),c=document.getElementById('clip');
if(!s)return;document.querySelectorAll('.grid tbody tr').forEach(function(r){
r.hidden=r.dataset.subject!==s.value||(c.value!=='all'&&r.dataset.clip!==c.value)});
Array.from(c.options).forEach(function(o){o.hidden=o.value!=='all'&&o.dataset.subject!==s.value});
if(c.selectedOptions.length&&c.selectedOptions[0].hidden)c.value='all'}
['subject','clip'].forEach(function(id){const e=document.getElementById(id);
if(e)e.addEventListener('change',showGrid)});showGrid();
"""


@dataclass
class Samples:
    """The grid: per subject, its clips (names) and, per column (ground truth first, then each
    variant), the GIF of each clip relative to the report folder, or why there is none."""

    columns: list[str]
    subjects: dict[str, list[str]] = field(default_factory=dict)  # subject -> clip names
    cells: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (subj, col, clip)
    gaps: dict[tuple[str, str], str] = field(default_factory=dict)  # (subject, column) -> why


def e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _inline(text: str) -> str:
    """Markdown emphasis of table.md (bold, italics, backslash escapes) as HTML."""
    text = e(text.replace("\\|", "|").replace("\\*", "\x00"))
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return text.replace("\x00", "*")


def markdown_tables(md: str) -> str:
    """table.md as HTML: headings, caption paragraphs (_..._), tables (sortable)."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            out.append(_table(block))
            continue
        if line.startswith("### "):
            out.append(f"<h4>{_inline(line[4:])}</h4>")
        elif line.startswith("## "):
            out.append(f"<h3>{_inline(line[3:])}</h3>")
        elif line.startswith("# "):
            pass  # the page's own title says it
        elif line.startswith("_") and line.endswith("_") and len(line) > 1:
            out.append(f'<p class="caption">{_inline(line[1:-1])}</p>')
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "".join(out)


def _cells(row: str) -> list[str]:
    inner = row.strip()[1:-1] if row.strip().endswith("|") else row.strip()[1:]
    return [c.strip() for c in re.split(r"(?<!\\)\|", inner)]


def _html_table(head: Iterable[str], rows: Iterable[str], kind: str = "sortable") -> str:
    """A table of `kind` (its class) from header cells (HTML) and whole <tr> rows."""
    header = "".join(f"<th>{h}</th>" for h in head)
    return (
        f'<div class="scroll"><table class="{kind}"><thead><tr>{header}</tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></div>"
    )


def _row(cells: Iterable[str], attrs: str = "") -> str:
    return f"<tr{attrs}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _table(block: list[str]) -> str:
    body = [_cells(r) for r in block[2:]] if len(block) > 1 else []
    return _html_table(map(_inline, _cells(block[0])), [_row(map(_inline, r)) for r in body])


def _grid(samples: Samples | None) -> str:
    if samples is None or not samples.subjects:
        return (
            "<p>No reconstructions: the report's samples are off (report.samples: 0) or no run "
            "kept any.</p>"
        )
    subjects = list(samples.subjects)
    clip_options = [
        f'<option value="{e(c)}" data-subject="{e(s)}">{e(s)}: {e(c)}</option>'
        for s, clips in samples.subjects.items()
        for c in clips
    ]
    rows = []
    for subject, clips in samples.subjects.items():
        for clip in clips:
            cells = [e(clip)]
            for column in samples.columns:
                src = samples.cells.get((subject, column, clip))
                if src is not None:
                    alt = f"{column}, {subject}, {clip}"
                    cells.append(f'<img src="{e(src)}" alt="{e(alt)}" loading="lazy">')
                else:
                    why = samples.gaps.get((subject, column), "no GIF for this clip")
                    cells.append(f'<span class="gap">{e(column)}: {e(why)}</span>')
            rows.append(_row(cells, f' data-subject="{e(subject)}" data-clip="{e(clip)}"'))
    return (
        '<p><label>Subject <select id="subject">'
        + "".join(f'<option value="{e(s)}">{e(s)}</option>' for s in subjects)
        + '</select></label> <label>Clip <select id="clip"><option value="all">all</option>'
        + "".join(clip_options)
        + "</select></label> (first seed of each variant; the ground truth leftmost)</p>"
        + _html_table(map(e, ["clip", *samples.columns]), rows, kind="grid")
    )


def _figures(out: Path, figures: Iterable[Path]) -> str:
    items = [
        f'<figure><img src="{e(p.relative_to(out).as_posix())}" alt="{e(p.stem)}" '
        f'loading="lazy"><figcaption>{e(p.relative_to(out).as_posix())}</figcaption></figure>'
        for p in sorted(figures)
    ]
    return "".join(items) or "<p>No figures (report.figures: false).</p>"


def _key_values(rows: Iterable[tuple[str, object]]) -> str:
    return _html_table(["what", "value"], [_row([e(k), e(v)]) for k, v in rows])


def _runs(runs: Sequence[Mapping[str, str]], ui: str | None) -> str:
    if not runs:
        return "<p>No finished runs.</p>"
    columns = [c for c in runs[0] if c != "url"]
    rows = []
    for run in runs:
        cells = [e(run[c]) for c in columns]
        if run.get("url"):
            at = columns.index("run id")
            cells[at] = f'<a href="{e(run["url"])}">{cells[at]}</a>'
        rows.append(_row(cells))
    where = (
        f'<p>Runs link to the MLflow UI at <a href="{e(ui)}">{e(ui)}</a>.</p>'
        if ui
        else "<p>The store's tracking is a local database: open the runs with the UI command "
        "below (links appear when the store's tracking URI is an HTTP server).</p>"
    )
    return where + _html_table(map(e, columns), rows)


def environment(computed_with: Mapping[str, str], tags: Mapping[str, str]) -> list[tuple[str, str]]:
    """What the runs were computed with (from their tags) and what wrote this page."""
    import importlib.metadata as md

    rows: list[tuple[str, str]] = []
    for label in sorted(set(computed_with.values())):
        runs = sum(v == label for v in computed_with.values())
        rows.append(("runs computed with", f"{label} ({runs} run{'s' if runs > 1 else ''})"))
    rows += [(k, v) for k, v in sorted(tags.items())]
    versions = []
    for name in ("torch", "diffusers", "transformers", "mlflow", "optuna", "numpy"):
        try:
            versions.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            continue
    rows.append(
        ("report written with", f"Python {platform.python_version()}; " + ", ".join(versions))
    )
    return rows


def _one_line(code: str) -> str:
    """The style or script on one line: the pages of a results/ folder then share no block of
    identical lines (each line of SCRIPT ends a statement or opens a block)."""
    return " ".join(line.strip() for line in code.strip().splitlines())


def _lines(text: str) -> str:
    """Text for a <pre> on one line of the file: line feeds as character references."""
    return e(text).replace("\n", "&#10;")


def _json_line(value: Mapping) -> str:
    """A mapping as one line of JSON that is safe inside <script> (no closing tag)."""
    return json.dumps(value, sort_keys=False).replace("</", "<\\/")


def write_index(
    out: Path,
    title: str,
    summary: Sequence[str],
    tables_md: str,
    samples: Samples | None,
    figures: Iterable[Path],
    spec_text: str,
    profile: Mapping,
    env: Sequence[tuple[str, str]],
    runs: Sequence[Mapping[str, str]],
    ui: str | None,
    ui_command: str,
    grid: bool = True,
) -> Path:
    """Write out/index.html and return its path (`grid`: a reconstructions section; a search's
    page has none, its trials are in the tables)."""
    sections = [
        ("tables", "Tables", markdown_tables(tables_md)),
        *([("reconstructions", "Reconstructions", _grid(samples))] if grid else []),
        ("figures", "Figures", _figures(out, figures)),
        (
            "spec",
            "Spec and profile",
            f"<h3>Spec</h3><pre>{_lines(spec_text)}</pre><details><summary>The resolved profile "
            f'(first run)</summary><pre id="profile">(shown by the page\'s script)</pre>'
            f'<script type="application/json" id="profile-data">{_json_line(profile)}</script>'
            "</details>",
        ),
        ("environment", "Environment", _key_values(env)),
        (
            "runs",
            "Runs",
            (_runs(runs, ui) if grid else "")
            + f"<p>The runs in MLflow's UI: <code>{e(ui_command)}</code></p>",
        ),
    ]
    nav = "".join(f'<a href="#{k}">{e(name)}</a>' for k, name, _ in sections)
    body = "".join(
        f'<section id="{k}"><h2>{e(name)}</h2>{content}</section>' for k, name, content in sections
    )
    meta = "".join(f'<p class="meta">{e(line)}</p>' for line in summary)
    page = (  # one line after the doctype (module docstring)
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{_one_line(STYLE)}</style></head><body>"
        f"<h1>{e(title)}</h1>{meta}<nav>{nav}</nav>{body}"
        f"<script>{_one_line(SCRIPT)}</script></body></html>\n"
    )
    path = Path(out) / INDEX
    path.write_text(page, encoding="utf-8")
    return path
