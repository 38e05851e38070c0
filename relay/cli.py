"""The ``hearth-relay`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the relay (arrives with the sync work; see the README's roadmap)."""
    parser = argparse.ArgumentParser(prog="hearth-relay", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--data", metavar="DIR")
    parser.add_argument("--config", metavar="FILE")
    parser.parse_args(argv)
    print("hearth-relay: the relay is not built yet in this version of Hearth.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
