"""Opening the bundles that come with a snapshot (docs/security.md §6, R13, check 1).

Each covered bundle is decrypted, its author's signature verified, its changes read —
each one's header, the objects it writes, and what it writes at the keys that name who
did something (R2a) — before :mod:`hearth.validity.snapshots` judges the snapshot. All of that is
a pure function of the bundle's bytes and its group's keys (:func:`open_carried`), and
for a catch-up of thousands of bundles it is most of the work. So once a catch-up is big
enough, the bundles go, in chunks as they arrive, to a second Python process
(:class:`Opener`), which runs that same function on the other core while this one
receives the rest; what comes back is checked here exactly as if opened here (a bundle
that fails refuses the snapshot, with the same reason). A small catch-up, or one whose
second process cannot be had, is opened here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hearth.errors import Damaged, LedgerError, ProtocolError
from hearth.ledger.attribution import ATTRIBUTION_KEYS
from hearth.ledger.automerge_doc import ChangeInfo, EntryRef, read_change_names
from hearth.ledger.change_ops import KeyedValue, NewKeys, ObjectRef, Operation
from hearth.node.node import Node
from hearth.protocol.bundle import (
    Envelope,
    EpochKeys,
    Inner,
    decode_changes,
    open_envelope,
    parse_envelope,
)

__all__ = ["CHUNK", "PROCESS_FROM", "Carried", "Opener", "open_carried"]

log = logging.getLogger(__name__)

CHUNK = 256
"""Bundles handed to the second process at a time."""
PROCESS_FROM = 1024
"""Bundles a catch-up must bring before a second process is started for them (starting
one costs a few tenths of a second; fewer bundles are opened here in less)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Carried:
    """A bundle that came with a snapshot, opened and its author's signature checked."""

    envelope: Envelope
    inner: Inner
    changes: tuple[tuple[str, bytes, ChangeInfo], ...]  # (document, change, its header)
    writes: tuple[set[ObjectRef] | None, ...]  # what each change writes to (None: unread)
    # Each change's operations at the keys that name who did something (R2a), or why
    # they cannot be read.
    names: tuple[tuple[KeyedValue, ...] | str, ...]
    # What each change writes only new keys into (change_ops.new_writes), and the
    # entries the bundle says it touched: read here once, not again by the checks.
    new: tuple[frozenset[ObjectRef] | None, ...]
    touched: tuple[tuple[EntryRef, ...], ...]
    # For each change writing only new keys, what R2a's entry tags ask of it
    # (change_ops.NewKeys), read in the same pass; None for the others.
    made: tuple[NewKeys | None, ...]


def open_carried(envelope: Envelope, keys: EpochKeys) -> Carried:
    """Open one bundle that came with a snapshot and read its changes;
    :class:`ProtocolError` if it does not decrypt, verify or read (which refuses the
    snapshot)."""
    try:
        inner = open_envelope(envelope, keys)
        batches = decode_changes(inner.payload) if inner.kind == "content" else []
        read = [
            (doc, change, *read_change_names(change, ATTRIBUTION_KEYS))
            for doc, change, _ in batches
        ]
        touched = tuple(tuple(refs) for _, _, refs in batches)
    except (Damaged, ProtocolError, LedgerError) as exc:
        raise ProtocolError(
            f"a bundle that came with the snapshot does not open or verify ({exc})"
        ) from exc
    return Carried(
        envelope=envelope,
        inner=inner,
        changes=tuple((doc, change, info) for doc, change, info, *_ in read),
        writes=tuple(writes for _, _, _, writes, *_ in read),
        names=tuple(n if isinstance(n, str) else tuple(n) for *_, n, _, _ in read),
        new=tuple(new for *_, new, _ in read),
        touched=touched,
        made=tuple(made for *_, made in read),
    )


# What the second process sends back for one bundle: plain tuples, cheap to pass —
# the inner bundle's fields, then per change (document, change, hash, deps, actor,
# what it writes, its names as (index, key, action, value) or why unreadable, what it
# writes only new keys into, the entries its bundle says it touched, and what R2a's entry
# tags ask of it as (operations as (object, key, action, id), actor and start op) or None).
_MadeWire = (
    tuple[tuple[tuple[ObjectRef, str | None, int, tuple[bytes, int]], ...], tuple[bytes, int]]
    | None
)
_Change = tuple[
    str,
    bytes,
    bytes,
    tuple[bytes, ...],
    bytes,
    set[ObjectRef] | None,
    tuple[tuple[int, str, int, str | int | bool | bytes | None], ...] | str,
    frozenset[ObjectRef] | None,
    tuple[EntryRef, ...],
    _MadeWire,
]
_Opened = tuple[tuple[object, ...], list[_Change]]
_INNER_FIELDS = (
    "kind",
    "group_id",
    "epoch_id",
    "author",
    "seq",
    "prev",
    "auth_heads",
    "created_at",
    "payload",
    "claim",
)


def _open_chunk(
    keys: Sequence[tuple[bytes, bytes, bytes]], sealed: Sequence[tuple[int, bytes]]
) -> list[_Opened] | str:
    """In the second process: open each (index into ``keys``, envelope bytes) with
    :func:`open_carried`; what came of each, or the first failure's reason."""
    epochs = [EpochKeys(group_id=g, epoch_id=e, secret=s) for g, e, s in keys]
    out: list[_Opened] = []
    for index, data in sealed:
        try:
            carried = open_carried(parse_envelope(data), epochs[index])
        except ProtocolError as exc:
            return str(exc)
        inner = carried.inner
        changes: list[_Change] = [
            (
                doc,
                change,
                info.hash,
                info.deps,
                info.actor,
                writes,
                names
                if isinstance(names, str)
                else tuple((n.index, n.key, n.action, n.value) for n in names),
                new,
                touched,
                _made_to_wire(made),
            )
            for (doc, change, info), writes, names, new, touched, made in zip(
                carried.changes,
                carried.writes,
                carried.names,
                carried.new,
                carried.touched,
                carried.made,
                strict=True,
            )
        ]
        out.append((tuple(getattr(inner, f) for f in _INNER_FIELDS), changes))
    return out


def _from_wire(envelope: Envelope, opened: _Opened) -> Carried:
    fields, changes = opened
    inner = Inner(**dict(zip(_INNER_FIELDS, fields, strict=True)))  # type: ignore[arg-type]
    return Carried(
        envelope=envelope,
        inner=inner,
        changes=tuple(
            (doc, change, ChangeInfo(hash=h, deps=deps, actor=actor))
            for doc, change, h, deps, actor, *_ in changes
        ),
        writes=tuple(c[5] for c in changes),
        names=tuple(
            n if isinstance(n, str) else tuple(KeyedValue(*op) for op in n)
            for *_, n, _, _, _ in changes
        ),
        new=tuple(c[7] for c in changes),
        touched=tuple(c[8] for c in changes),
        made=tuple(_made_from_wire(c[9]) for c in changes),
    )


def _made_to_wire(made: NewKeys | None) -> _MadeWire:
    if made is None:
        return None
    ops = tuple((op.obj, op.key, op.action, op.id) for op in made.ops)
    return ops, made.made_from


def _made_from_wire(made: _MadeWire) -> NewKeys | None:
    if made is None:
        return None
    ops, made_from = made
    return NewKeys(tuple(Operation(*op) for op in ops), made_from)


class _Worker:
    """The second process (this module run as a script), fed chunks over a pipe by a
    thread of this one, one chunk at a time, in order. Started as a fresh interpreter,
    not forked: a copy of a process busy with an event loop and a store is not one to
    trust, and a fresh one runs nothing but this module."""

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parent.parent)  # this very hearth
        path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "hearth.validity.snapshot_opening"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path},
            # `-m` puts the working directory first on the import path: started where the
            # member ran hearth (maybe a folder others write to), it would import what
            # someone left there. From this hearth's own folder it finds only that.
            cwd=package_root,
        )
        self._todo: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="snapshot-opening", daemon=True)
        self._thread.start()

    def submit(
        self, keys: list[tuple[bytes, bytes, bytes]], sealed: list[tuple[int, bytes]]
    ) -> Future[list[_Opened] | str]:
        """Have a chunk opened (:func:`_open_chunk`) in the second process."""
        future: Future[list[_Opened] | str] = Future()
        self._todo.put((future, keys, sealed))
        return future

    def _run(self) -> None:
        to, back = self._process.stdin, self._process.stdout
        assert to is not None
        assert back is not None
        while (job := self._todo.get()) is not None:
            future, keys, sealed = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                pickle.dump((keys, sealed), to, protocol=pickle.HIGHEST_PROTOCOL)
                to.flush()
                # Pickle both ways: the other end is this module, in a child this one
                # started, over its own pipes; it never carries anything from outside.
                future.set_result(pickle.load(back))  # noqa: S301
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                future.set_exception(exc)

    def stop(self) -> None:
        """Drop what is still queued, let the chunk under way finish, end the process."""
        while True:
            try:
                job = self._todo.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        self._todo.put(None)
        self._thread.join()
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):  # a process that died: its pipe is broken
                self._process.stdin.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


_Job = tuple[Future[list[_Opened] | str], list[tuple[bytes, bytes, bytes]], list[tuple[int, bytes]]]


def _serve(chunks: BinaryIO, answers: BinaryIO) -> None:
    """The second process: open each chunk that comes, answer with what came of it, until
    the other end closes."""
    while True:
        try:
            keys, sealed = pickle.load(chunks)  # noqa: S301 - from the process that started this one
        except EOFError:
            return
        pickle.dump(_open_chunk(keys, sealed), answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()


class Opener:
    """The bundles that come with a snapshot, opened as they arrive: past
    ``process_from`` of them, in chunks, by a second process while the relay still sends
    the rest; :meth:`carried` opens what is left here and waits for the others."""

    def __init__(
        self,
        node: Node,
        *,
        process_from: int = PROCESS_FROM,
        chunk: int = CHUNK,
    ) -> None:
        self._feeds = node.feeds
        self._process_from = process_from
        self._chunk = chunk
        self._held: list[tuple[Envelope, EpochKeys]] = []
        self._added = 0
        self._sent: list[tuple[list[tuple[Envelope, EpochKeys]], Future[list[_Opened] | str]]] = []
        self._worker: _Worker | None = None
        self._broken = False
        self._closed = False
        self._closing = threading.Lock()
        self.sent_away = 0  # bundles handed to the second process

    @classmethod
    def of(cls, node: Node, bundles: Sequence[bytes]) -> Opener:
        """An opener given every bundle at once."""
        opener = cls(node)
        for bundle in bundles:
            opener.add(bundle)
        return opener

    def add(self, data: bytes) -> bytes | None:
        """One more bundle; return its id. One that is damaged or not of our groups is
        left to :func:`hearth.validity.intake.take_in`."""
        try:
            envelope = parse_envelope(data)
        except Damaged:
            return None
        found = self._feeds.keys_for_topic(envelope.topic)
        if found is not None:
            self._held.append((envelope, found[1]))
            self._added += 1
            if self._added >= self._process_from and len(self._held) >= self._chunk:
                self._submit()
        return envelope.id

    def _submit(self) -> None:
        if self._broken:
            return
        try:
            if self._worker is None:
                self._worker = _Worker()
            while len(self._held) >= self._chunk:
                chunk, self._held = self._held[: self._chunk], self._held[self._chunk :]
                keys = list({id(k): k for _, k in chunk}.values())
                at = {id(k): i for i, k in enumerate(keys)}
                sealed = [(at[id(k)], e.encode()) for e, k in chunk]
                wire = [(k.group_id, k.epoch_id, k.secret) for k in keys]
                self._sent.append((chunk, self._worker.submit(wire, sealed)))
                self.sent_away += len(chunk)
        except (OSError, RuntimeError) as exc:  # no second process to be had: open here
            log.info("opening a snapshot's bundles here (%s)", exc)
            self._broken = True

    def carried(self) -> list[Carried]:
        """Every bundle added, opened; :class:`ProtocolError` if one fails. Meanwhile the
        chunks the second process has not begun yet are opened here, the last first, so
        that both cores open them (this may run on a thread of its own: nothing here
        touches the node)."""
        held, sent = self._held, self._sent
        try:
            failed: ProtocolError | None = None
            here: dict[int, list[Carried] | None] = {}  # chunks taken back from the queue
            tail: list[Carried] = []
            try:  # while the second process works through the first chunks
                tail = self._open_here(held)
                for index in reversed(range(len(sent))):
                    if not sent[index][1].cancel():
                        break  # begun or done there
                    here[index] = None
                    here[index] = self._open_here(sent[index][0])
            except ProtocolError as exc:
                failed = exc
                for index, (_, future) in enumerate(sent):  # refused anyway: stop there
                    if future.cancel():
                        here.setdefault(index, None)
            found: list[Carried] = []
            for index, (chunk, future) in enumerate(sent):
                if index in here:
                    found += here[index] or []
                    continue
                try:
                    result = future.result()
                except (CancelledError, OSError, EOFError, pickle.UnpicklingError) as exc:
                    # the second process died: its chunk is opened here
                    log.info("opening a snapshot's bundles here (%r)", exc)
                    found += self._open_here(chunk)
                    continue
                if isinstance(result, str):
                    raise ProtocolError(result)
                found += [_from_wire(e, r) for (e, _), r in zip(chunk, result, strict=True)]
            if failed is not None:
                raise failed
            return found + tail
        finally:
            self.close()

    def _open_here(self, chunk: Sequence[tuple[Envelope, EpochKeys]]) -> list[Carried]:
        if self._closed:  # given up meanwhile (a sync cancelled): no use going on
            raise ProtocolError("the snapshot was given up before its bundles were opened")
        return [open_carried(envelope, keys) for envelope, keys in chunk]

    def close(self) -> None:
        """Stop the second process (what it was given is dropped). Safe to call from
        another thread than the one opening in :meth:`carried`, and more than once."""
        with self._closing:
            self._closed = True
            self._held = []
            self._sent = []
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()


if __name__ == "__main__":
    _serve(sys.stdin.buffer, sys.stdout.buffer)
