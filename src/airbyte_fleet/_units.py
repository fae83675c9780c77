"""How a size is written for people: the result table and the HTML report show the same bytes
the same way (decimal units, as Airbyte's own UI does)."""

from __future__ import annotations

__all__ = ["format_size"]


def format_size(n: int) -> str:
    """``512 B``, ``2.1 GB``: one decimal above a thousand bytes, up to TB."""
    value, unit = float(n), "B"
    for bigger in ("KB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
