"""Plain-text and markdown tables for evaluation results (the CLI's human-readable output)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_table", "fmt_value", "fmt_interval"]


def fmt_value(value: object, digits: int = 4) -> str:
    """Floats to ``digits`` decimals, None/NaN to ``-``, everything else via ``str``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if value != value else f"{value:.{digits}f}"
    return str(value)


def fmt_interval(interval: Sequence[object] | None, digits: int = 4) -> str:
    """``[lo, hi]`` as ``[lo, hi]`` text with ``digits`` decimals (``-`` when missing)."""
    if not interval or any(v is None for v in interval):
        return "-"
    return f"[{fmt_value(interval[0], digits)}, {fmt_value(interval[1], digits)}]"


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]], *, markdown: bool = False) -> str:
    """An aligned text table (first column left-aligned, the rest right-aligned), or a markdown table."""
    cells = [[fmt_value(c) for c in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |",
                 "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h))
              for i, h in enumerate(header)]

    def line(row: Sequence[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line([str(h) for h in header]), line(["-" * w for w in widths]), *map(line, cells)])
