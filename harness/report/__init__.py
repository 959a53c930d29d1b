"""`mvbench report`: tables, figures and sample sheets from finished runs."""

import json
from collections.abc import Iterable
from pathlib import Path


def listed_files(manifest: Path) -> list[str]:
    """The files (relative to its folder) that the report which wrote `manifest` (runs.json)
    listed under "files"; none if it is missing, unreadable or from before the list existed."""
    try:
        files = json.loads(Path(manifest).read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(files, list):
        return []
    return [f for f in files if isinstance(f, str)]


def remove_stale(out: Path, written: Iterable[Path], previous: Iterable[str]) -> list[Path]:
    """Delete the files an earlier report wrote (`previous`, relative to `out`) that this one did
    not (`written`), so that a metric taken off the spec leaves no figure behind; returns them.
    Nothing else in the folder is touched, nor anything outside it."""
    root = Path(out).resolve()
    keep = {Path(p).resolve() for p in written}
    stale = set()
    for name in previous:
        path = root / name
        target = path.resolve()
        if target.is_relative_to(root) and target.is_file() and target not in keep:
            stale.add(path)  # a link is removed, not what it points to
    for path in sorted(stale):
        path.unlink()
    return sorted(stale)
