"""Plain-text output for the command line: aligned tables and one-line summaries."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["emit", "print_json", "table"]


def emit(args: argparse.Namespace, data: object, text: str) -> int:
    """A command's result: ``data`` as JSON with ``--json``, else ``text``; exit status 0."""
    if getattr(args, "json", False):
        print_json(data)
    else:
        print(text)
    return 0


def print_json(data: object) -> None:
    """Print data as JSON: indented for a person at a terminal, compact for a program."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns under a header."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=False)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)
