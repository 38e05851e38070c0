"""The ``hearth`` command: bare, it opens the app; with a subcommand, it runs it.

The command-line parser and every subcommand live in ``hearth.cli``; this launcher sits
in ``tui`` so the core never imports the app. Textual is imported only when the app
opens, so scripted subcommands start as fast as before. Nothing of Hearth is imported
before :func:`main` is running, so Ctrl-C in the first moments ends as quietly as later.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "open_app"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hearth``; Ctrl-C anywhere ends it with a short word, not a traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("\nhearth: interrupted.", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    from hearth.cli.main import build_parser, resolve_home
    from hearth.cli.main import main as run_command

    args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if args.command is None and interactive:
        return open_app(resolve_home(args.home))
    if args.command == "demo" and not args.headless and interactive:
        return open_demo()
    return run_command(args=args)  # also: no terminal to draw on, so the plain-text versions


def open_app(home: Path, *, share: bool = True) -> int:
    """The app on this home's current group; the welcome first if there is none."""
    from hearth.errors import HearthError
    from hearth.node.identity import has_identity
    from hearth.node.node import open_node
    from tui.app import HearthApp
    from tui.welcome import WelcomeApp

    def has_group() -> bool:
        if not has_identity(home):
            return False
        with open_node(home) as node:
            return bool(node.groups())

    if not has_group() and not WelcomeApp(home).run():
        return 0
    try:
        with open_node(home) as node:
            HearthApp(node, share=share).run()
    except HearthError as exc:
        print(f"hearth: {exc}", file=sys.stderr)
        return 1
    return 0


def open_demo() -> int:
    """``hearth demo``: build the demo around a relay on loopback, open the app as Ada."""
    from hearth.cli.demo import running_demo, summary

    with running_demo() as demo:
        text = summary(demo)
        home = demo.nodes["Ada"].home
        demo.close()  # the app opens Ada's home afresh, with the real clock
        code = open_app(home)
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
