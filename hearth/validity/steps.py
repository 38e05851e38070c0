"""Long work written once, run either straight through or with an event loop let run.

Taking a snapshot in (docs/security.md §6, R13) means seconds of work for a big
catch-up. Written as a generator, it says where it may pause: it yields ``None`` where
the event loop may run a turn (between chunks of a long check), or a function to run
off the loop (work that touches no store and no document the node holds — waiting for
the bundles to be opened, loading the snapshot's documents) and is sent back what that
function returned, or has its exception thrown in. :func:`run` carries the steps out in
order here; :func:`run_async` does the same work from a coroutine, so that a sync
keeps answering heartbeats and telling progress meanwhile. Both give the same result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any, TypeVar

__all__ = ["Steps", "run", "run_async"]

T = TypeVar("T")

Steps = Generator[Callable[[], Any] | None, Any, T]
"""Work in steps: yields a pause (``None``) or a function to run off the loop."""


def run(steps: Steps[T]) -> T:
    """Carry the steps out here, one after the other; what they return."""
    answer: Any = None
    failed: BaseException | None = None
    while True:
        try:
            step = steps.throw(failed) if failed is not None else steps.send(answer)
        except StopIteration as done:
            result: T = done.value
            return result
        answer, failed = None, None
        if step is not None:
            try:
                answer = step()
            except Exception as exc:  # noqa: BLE001 - handed to the steps, which judge it
                failed = exc


async def run_async(steps: Steps[T]) -> T:
    """Carry the steps out with the event loop running between them: functions on a
    worker thread, a turn of the loop at each pause; what they return."""
    answer: Any = None
    failed: BaseException | None = None
    try:
        while True:
            try:
                step = steps.throw(failed) if failed is not None else steps.send(answer)
            except StopIteration as done:
                result: T = done.value
                return result
            answer, failed = None, None
            if step is None:
                await asyncio.sleep(0)
                continue
            try:
                answer = await asyncio.to_thread(step)
            except Exception as exc:  # noqa: BLE001 - handed to the steps, which judge it
                failed = exc
    finally:
        steps.close()  # cancelled: the steps' own clean-up runs
