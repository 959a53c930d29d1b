"""Which row each variant of a report is compared with.

A suite's `reference:` names one variant that every other row is compared with (`full`), or
pairs each compared variant with its own reference (`{mbm-0.25: scratch-0.25, mbm-1: scratch-1}`:
a contrast at each level of a design, as a data-regime study needs). Deltas, paired tests and
their marks are per pair; a row that is neither compared nor a reference has none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    """One reference for every row (`single`), or (variant, its reference) pairs."""

    single: str | None = None
    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, value: str | Mapping[str, str] | Reference | None) -> Reference | None:
        """From a spec's or the command line's value (None: no reference)."""
        if value is None or isinstance(value, Reference):
            return value
        if isinstance(value, str):
            return cls(single=value)
        return cls(pairs=tuple((str(k), str(v)) for k, v in value.items()))

    def of_variant(self, variant: str) -> str | None:
        """The variant `variant` is compared with; None for a reference or an unpaired row."""
        if self.single is not None:
            return None if variant == self.single else self.single
        return dict(self.pairs).get(variant)

    @property
    def names(self) -> list[str]:
        """Every reference, in order."""
        if self.single is not None:
            return [self.single]
        return list(dict.fromkeys(ref for _, ref in self.pairs))

    def keep(self, variants: Iterable[str]) -> tuple[Reference | None, list[str]]:
        """The reference restricted to `variants` (the finished ones): pairs with a member
        missing are dropped; returns it (None if nothing is left) and the names missing."""
        have = set(variants)
        if self.single is not None:
            return (self, []) if self.single in have else (None, [self.single])
        kept = tuple((v, r) for v, r in self.pairs if v in have and r in have)
        missing = sorted({n for pair in self.pairs for n in pair} - have)
        return (Reference(pairs=kept) if kept else None), missing

    def label(self, variant: str) -> str:
        """What a table row's label adds: " (ref.)" for a reference, " (vs R)" for a row
        compared with its own R."""
        if variant in self.names:
            return " (ref.)"
        if self.single is None and variant in dict(self.pairs):
            return f" (vs {dict(self.pairs)[variant]})"
        return ""

    def text(self) -> str:
        """The reference as a caption names it."""
        if self.single is not None:
            return f"the reference {self.single}"
        return "each row's reference (named in the row: vs ...)"
