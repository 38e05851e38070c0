"""The ``hearth-relay`` command: run a relay, or check a config file."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from hearth import __version__
from hearth.errors import HearthError
from hearth.protocol.frames import PROTOCOL_VERSION
from relay import backup as backups
from relay import moderation_cli
from relay.config import RelayConfig, as_toml, load_config
from relay.identity import load_or_create
from relay.logs import configure
from relay.stores import open_store

__all__ = ["main"]

log = logging.getLogger("relay")

CONFIG_VARIABLE = "HEARTH_RELAY_CONFIG"
"""The settings file to use when no --config is given (the container image sets it)."""


async def serve(config: RelayConfig, reread: Callable[[], RelayConfig] | None = None) -> None:
    """Run until SIGTERM or SIGINT; print the listening line once ready. On SIGHUP the
    settings are read again (``reread``) and the limits among them applied, and the
    moderation lists are read again from the store."""
    # Here, not above: the operator's other subcommands start faster without aiohttp.
    from aiohttp import web

    from relay.door import Doorway
    from relay.links import CONFIG, CORE, DOOR
    from relay.server import apply_settings, make_app

    # Until the handler below is in place, a SIGHUP (a log rotation's, a reload sent too
    # early) is ignored rather than ending a relay that is starting.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config = fit_descriptors(config)
    store = open_store(config)
    app = make_app(config, store, load_or_create(Path(config.data)))
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=config.shutdown_grace_s / 2,  # for requests still being handled
        access_log=None,  # it would log raw client addresses
    )
    await runner.setup()
    handlers, door, core = runner.server, app[DOOR], app[CORE]
    assert handlers is not None
    loop = asyncio.get_running_loop()
    # Listening ourselves rather than through a site: each accepted socket passes the
    # door (relay/door.py) before aiohttp reads a byte of it.
    server = await loop.create_server(
        lambda: Doorway(handlers(), door, core.reject),
        config.host,
        config.port,
        backlog=_BACKLOG,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    reloading: set[asyncio.Future[None]] = set()

    def reload() -> None:
        kept = ""
        try:
            fresh = fit_descriptors(reread()) if reread is not None else app[CONFIG]
        except HearthError as exc:
            kept = str(exc)
            fresh = app[CONFIG]
        task = asyncio.ensure_future(apply_settings(app, fresh, refused=kept))
        reloading.add(task)
        task.add_done_callback(reloading.discard)

    # Before the relay says it listens: a reload sent as soon as it does (a service
    # manager, a script) must find the handler, not SIGHUP's default, which ends it.
    loop.add_signal_handler(signal.SIGHUP, reload)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on ws://{host}:{port}", flush=True)
    await stop.wait()
    log.info("shutting down")
    started = time.monotonic()
    server.close()  # no new sockets
    try:
        # Runs on_shutdown (clients are closed with 1001, after what is stored is
        # acknowledged); what it cuts short was never acknowledged.
        await asyncio.wait_for(runner.cleanup(), config.shutdown_grace_s)
    except asyncio.TimeoutError:
        log.warning("stopping took longer than shutdown_grace_s; stopping now")
    store.close()
    log.info("stopped", extra={"seconds": round(time.monotonic() - started, 3)})


_BACKLOG = 64  # connections waiting to be accepted; asyncio accepts this many at a time
# The store, logs, links to peer relays; and a couple of batches of sockets just accepted,
# open before the door has dropped those that do not fit.
_SPARE_DESCRIPTORS = 64 + 2 * _BACKLOG


def plan_descriptors(max_connections: int, soft: int, hard: int) -> tuple[int, int, str]:
    """The descriptor limit to ask for, the connections that fit under it, and what to
    tell the operator ('' if all is well): every connection holds a descriptor, and a
    relay out of descriptors fails every client, honest ones too, until some close."""
    wanted = max_connections + _SPARE_DESCRIPTORS
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft, max_connections, ""
    if hard == resource.RLIM_INFINITY or hard >= wanted:
        return wanted, max_connections, ""
    fits = max(1, hard - _SPARE_DESCRIPTORS)
    return (
        hard,
        fits,
        f"this relay may open only {hard} files (descriptors), too few for "
        f"max_connections = {max_connections}: it takes at most {fits} connections. "
        f"Allow {wanted} or more: LimitNOFILE={wanted} in its systemd unit, "
        f"`ulimit -n {wanted}` before starting it, or ulimits: nofile in compose.yaml; "
        "or lower max_connections",
    )


def fit_descriptors(config: RelayConfig) -> RelayConfig:
    """Raise the soft descriptor limit as far as ``max_connections`` needs, where the hard
    limit allows; otherwise say plainly what to set, and take only as many connections as
    fit (whatever a client does, the relay never runs out of descriptors)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit, fits, advice = plan_descriptors(config.max_connections, soft, hard)
    if limit != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    if advice:
        log.warning(advice)
        return replace(config, max_connections=fits)
    return config


def _backed_up(made: backups.BackedUp, data: Path) -> str:
    if not made.relay_id:
        return (
            f"Backed up to {made.path}, without an identity key: there is none in {data} "
            "(the relay makes one when it first starts)."
        )
    return (
        f"Backed up to {made.path}, with the identity of relay {made.relay_id}: "
        "keep the file private (only its owner may read it)."
    )


def _restored(restored: backups.Restored) -> str:
    lines = [f"Restored into {restored.where}; start the relay on it."]
    if restored.replaced_id:
        lines.append(
            f"The relay's id changed from {restored.replaced_id} to {restored.relay_id} "
            "(the old key is kept as relay.key.replaced)."
        )
    elif restored.relay_id:
        lines.append(f"The relay's id is {restored.relay_id}.")
    else:
        lines.append(
            "The backup holds no identity key: the relay makes a new id when it starts, "
            "which peer relays must then accept (accept_peers)."
        )
    if restored.key_file:
        lines.append(
            f"Its key is {restored.key_file}: start the relay with that data directory "
            "(--data or data =), or it makes itself a new id."
        )
    return "\n".join(lines)


def _ask(old: str, new: str) -> bool:
    """Whether the operator, at a terminal, agrees to change the relay's id."""
    if not sys.stdin.isatty():
        return False
    answer = input(
        f"This data directory has the identity of relay {old}; the backup is of relay "
        f"{new}. Peer relays accept the old id only. Take the backup's id? [y/N] "
    )
    return answer.strip().lower() in ("y", "yes")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hearth-relay`` command."""
    parser = argparse.ArgumentParser(
        prog="hearth-relay",
        description="Store and forward Hearth groups' encrypted bundles.",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--data", metavar="DIR", help="where the relay keeps its store")
    parser.add_argument("--config", metavar="FILE", type=Path, help="a TOML settings file")
    parser.add_argument(
        "--database",
        metavar="URL",
        help="keep the store in PostgreSQL (postgresql://...) instead of SQLite in --data",
    )
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="URL#ID",
        help=(
            "a peer relay to mirror topics with: its address, '#', and the id its operator "
            "gave (repeatable; adds to the config's peers)"
        ),
    )
    parser.add_argument(
        "--accept-peer",
        action="append",
        default=[],
        metavar="ID",
        help="a relay id allowed to peer with this relay (repeatable; see `hearth-relay id`)",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"hearth-relay {__version__} (protocol {PROTOCOL_VERSION})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    parser.add_argument(
        "--log-format",
        choices=("json", "text"),
        default="json",
        help="logs on stderr as JSON lines (default) or plain text",
    )
    sub = parser.add_subparsers(dest="command")
    ident = sub.add_parser("id", help="print this relay's id, for peer relays' accept_peers")
    ident.add_argument("--data", dest="sub_data", metavar="DIR")
    ident.add_argument("--config", dest="sub_config", metavar="FILE", type=Path)
    check = sub.add_parser("check-config", help="explain what is wrong in a config file")
    check.add_argument("file", type=Path)
    check.add_argument(
        "--print", action="store_true", help="print every setting in effect, defaults included"
    )
    backup = sub.add_parser("backup", help="copy the store (either kind) while the relay runs")
    backup.add_argument("dest", type=Path, help="a file, or a directory to put relay.db in")
    restore = sub.add_parser(
        "restore", help="put a backup in place as an empty store of either kind (relay stopped)"
    )
    restore.add_argument("src", type=Path, help="a file written by `hearth-relay backup`")
    restore.add_argument(
        "--force",
        action="store_true",
        help="take the backup's relay id even if the data directory holds another one",
    )
    for sub_parser in (backup, restore, *moderation_cli.add_parsers(sub)):
        sub_parser.add_argument("--data", dest="sub_data", metavar="DIR")
        sub_parser.add_argument("--config", dest="sub_config", metavar="FILE", type=Path)
        sub_parser.add_argument("--database", dest="sub_database", metavar="URL")
    args = parser.parse_args(argv)
    if args.config is None and os.environ.get(CONFIG_VARIABLE):
        args.config = Path(os.environ[CONFIG_VARIABLE])  # the container image sets it
    # An operator (or a test) can ask a relay that seems stuck where it is.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    configure(json_lines=args.log_format == "json", verbose=args.verbose)
    try:
        if args.command == "check-config":
            config = load_config(args.file)
            print(
                as_toml(config) if args.print else f"{args.file}: fine. Limits: {config.limits()}"
            )
            return 0
        if args.command in ("backup", "restore", "id", *moderation_cli.COMMANDS):
            config = load_config(
                args.sub_config or args.config,
                data=args.sub_data or args.data,
                database_url=getattr(args, "sub_database", None) or args.database,
            )
            if args.command in moderation_cli.COMMANDS:
                return moderation_cli.run(args, config)
            if args.command == "id":
                print(load_or_create(Path(config.data)).public.hex())
            elif args.command == "backup":
                print(_backed_up(backups.backup(config, args.dest), Path(config.data)))
            else:
                restored = backups.restore(
                    args.src, config, change_id=lambda old, new: args.force or _ask(old, new)
                )
                print(_restored(restored))
            return 0

        def settings() -> RelayConfig:
            return load_config(
                args.config,
                host=args.host,
                port=args.port,
                data=args.data,
                database_url=args.database,
                add_peers=args.peer,
                add_accept_peers=args.accept_peer,
            )

        asyncio.run(serve(settings(), reread=settings))
    except HearthError as exc:
        print(f"hearth-relay: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.filename:  # the data directory, or a file in it
            print(f"hearth-relay: cannot use {exc.filename} ({exc.strerror}).", file=sys.stderr)
        else:
            print(f"hearth-relay: cannot listen ({exc}).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
