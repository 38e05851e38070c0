"""Asking a member a yes/no question at the terminal, in a way Ctrl-C always ends.

``input()`` in a worker thread (so that an event loop keeps running meanwhile) cannot be
interrupted: Ctrl-C cancels the loop, which then waits for the thread until Enter is
pressed. :func:`ask` waits for the line on the loop itself instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from hearth.errors import UsageError

__all__ = ["ask", "confirm", "yes"]


def confirm(args: argparse.Namespace, question: str) -> None:
    """Ask before something that cannot be undone; ``--yes`` answers for scripts."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("This cannot be undone; add --yes to do it without being asked.")
    if not yes(input(f"{question} [y/N] ")):
        raise UsageError("Nothing was changed.")


def yes(answer: str) -> bool:
    """Whether an answer means yes."""
    return answer.strip().lower() in ("y", "yes")


async def ask(question: str) -> str:
    """Print ``question`` and wait, without blocking the event loop, for a line of answer
    (empty at the end of input)."""
    print(question, end="", flush=True)
    loop = asyncio.get_running_loop()
    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError):  # no real stdin (captured): nobody can answer
        return ""
    line: asyncio.Future[str] = loop.create_future()

    def readable() -> None:
        if not line.done():
            line.set_result(sys.stdin.readline())

    try:
        loop.add_reader(fd, readable)
    except (NotImplementedError, PermissionError, ValueError):  # a plain file
        return sys.stdin.readline()
    try:
        return await line
    finally:
        loop.remove_reader(fd)
