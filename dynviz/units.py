"""How cost is written for people: one unit everywhere (multiply–accumulates, the papers' "FLOPs").
No torch here: cards, tables and pages format cost without loading a network."""

from __future__ import annotations

FLOPS_UNIT = "FLOPs (multiply–adds)"


def format_flops(macs: float) -> str:
    """0.385e9 → '0.39 G' (with M below 0.1 G)."""
    return f"{macs / 1e9:.2f} G" if macs >= 1e8 else f"{macs / 1e6:.1f} M"


def spent_of_full(spent: float, full: float) -> str:
    """'0.21 G of 0.86 G FLOPs (24%)': the spent cost always next to its static reference."""
    return f"{format_flops(spent)} of {format_flops(full)} FLOPs ({100 * spent / full:.0f}%)"
