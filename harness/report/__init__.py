"""`mvbench report`: tables, figures and sample sheets from finished runs."""

from collections.abc import Iterable
from pathlib import Path

# What a report writes under its folder: re-writing a report replaces these, and removes those it
# no longer writes (a metric taken off the spec must not leave its figure behind).
OWNED = ("table.md", "table.tex", "table.csv", "attention.md", "figures/*.png")


def remove_stale(out: Path, written: Iterable[Path], owned: Iterable[str] = OWNED) -> list[Path]:
    """Delete the files under `out` that match `owned` and are not in `written`; returns them.
    Only the report's own names are touched: anything else in the folder stays."""
    keep = {Path(p).resolve() for p in written}
    stale = sorted(
        {p for pattern in owned for p in Path(out).glob(pattern) if p.resolve() not in keep}
    )
    for path in stale:
        path.unlink()
    return stale
