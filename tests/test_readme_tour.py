"""The README's tour, run as a test: every ``hearth`` command the README shows, in the
order it shows them, by real ``hearth`` processes in fresh homes against a real relay on
127.0.0.1.

The README is read, not copied: the commands found in its ``sh`` blocks must be exactly
the :data:`TOUR` below (a command added to the README without a step here fails), each
must succeed, and its output must say what the README says it does. Each step names who
runs it (Ada on her machine, Ben on his, Cleo as the admin of a neighbouring group), and
what a reader fills in for themselves — the relay's address, the code the inviter reads
out, an id from a listing — is filled in the same way here. Steps the README leaves to
the reader (Ben's machine being set up, Eve joining with the token) run unshown between.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Cli, Result, hearth_command
from tests.test_sync_processes import Relay, start_relay

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE_RELAYS = ("ws://relay.example.org:8765", "wss://relay.example.org")
SHOWN_CODES = ("7-orchard-lantern-cobalt", "4-amber-kettle-sloe")


def readme_commands() -> list[str]:
    """The ``hearth`` commands of the README's ``sh`` blocks, each without its comment
    (``hearth demo`` and the tests' own command, run after installing, are not lines of
    their own: the demo has its own tests in test_cli.py)."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        for line in block.splitlines():
            if line.startswith("hearth "):
                commands.append(line.split(" #", 1)[0].strip())
    return commands


class InProcess(Cli):
    """``hearth`` run in this process (the same ``main`` as the console script, without a
    quarter of a second of interpreter start-up per command): for commands that neither
    wait nor ask; those run as real processes (:meth:`Tour.start`, :func:`_answered`)."""

    def __call__(self, *args: str, check: bool = True, timeout: float = 60) -> Result:
        from hearth.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        here = Path.cwd()
        os.chdir(self.cwd or here)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(["--home", str(self.home), *args])
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        finally:
            os.chdir(here)
        result = Result(code, out.getvalue(), err.getvalue())
        if check and code != 0:
            raise AssertionError(f"hearth {' '.join(args)} failed: {result.err}{result.out}")
        return result


@dataclass
class Tour:
    """The people of the tour, their relay, and what a reader would note down on the way."""

    tmp: Path
    relay: Relay
    people: dict[str, Cli] = field(default_factory=dict)
    noted: dict[str, str] = field(default_factory=dict)
    running: list[subprocess.Popen[str]] = field(default_factory=list)

    def __call__(self, who: str) -> Cli:
        if who not in self.people:
            self.people[who] = InProcess(self.tmp / who, cwd=self.tmp)
        return self.people[who]

    def start(self, who: str, args: list[str], answer: str = "") -> subprocess.Popen[str]:
        """A command that waits (an invite, `serve`) running in the background."""
        env = {k: v for k, v in os.environ.items() if k != "HEARTH_HOME"}
        proc = subprocess.Popen(
            [*hearth_command(), "--home", str(self(who).home), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=self.tmp,
        )
        self.running.append(proc)
        if answer:
            assert proc.stdin is not None
            proc.stdin.write(answer)
            proc.stdin.flush()
        return proc


Hook = Callable[[Tour], None]


@dataclass
class Step:
    """One README command: who runs it, what its output must say, what is typed at its
    question, and what happens unshown before it."""

    who: str
    line: str
    says: tuple[str, ...] = ()
    answer: str = ""
    before: Hook | None = None
    run: Callable[[Tour, list[str]], Result] | None = None


def _ben_and_eve_join_with_the_token(tour: Tour, token: str) -> None:
    eve = tour("eve")
    eve("join", token, "--name", "Eve")
    eve("sync")


def _invite_and_join(tour: Tour, args: list[str]) -> Result:
    """``hearth invite``: the code Ada reads out goes into Ben's ``join`` (the next step)."""
    inviting = tour.start("ada", args, answer="y\n")
    assert inviting.stdout is not None
    first = inviting.stdout.readline()
    code = re.search(r"\b\d+(?:-[a-z]+){3}\b", first)
    assert code, first
    tour.noted["code"] = code.group(0)
    tour.noted["inviting"] = str(len(tour.running) - 1)
    return Result(0, first, "")


def _join(tour: Tour, args: list[str]) -> Result:
    result = tour("ben")(*args, timeout=60)
    inviting = tour.running[int(tour.noted.pop("inviting"))]
    out, err = inviting.communicate(timeout=60)
    assert inviting.returncode == 0, err
    assert "Ben" in out + err
    return result


def _token(tour: Tour, args: list[str]) -> Result:
    result = tour("ada")(*args)
    _ben_and_eve_join_with_the_token(tour, result.out.strip())
    return result


def _serve(tour: Tour, args: list[str]) -> Result:
    """``hearth serve`` runs until stopped: it must say it is connected, then stop on ^C."""
    proc = tour.start("ada", args)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130), err
    return Result(0, first + out, err)


def _listening_on_loopback(tour: Tour, args: list[str]) -> Result:
    # The README listens on every interface; the test stays on loopback and off the LAN.
    args = [a.replace("0.0.0.0:8766", "127.0.0.1:0") for a in args] + ["--no-lan"]
    return _serve(tour, args)


def _peer_on_loopback(tour: Tour, args: list[str]) -> Result:
    # A peer that is not there, on loopback: nothing leaves the machine.
    return tour("ada")(*[a.replace("192.168.1.20:8766", "127.0.0.1:9") for a in args])


def _sync(*who: str) -> Hook:
    def hook(tour: Tour) -> None:
        for name in who:
            tour(name)("sync")

    return hook


def _second_device(tour: Tour) -> None:
    """Ada's old phone, set up with `hearth device add` (so there is a device to lose)."""
    adding = tour.start("ada", ["device", "add", "--yes", "--timeout", "60", "--json"])
    assert adding.stdout is not None
    code = json.loads(adding.stdout.readline())["code"]
    tour("phone")("join", code, "--relay", tour.relay.url, timeout=60)
    adding.communicate(timeout=60)
    assert adding.returncode == 0
    tour("ada")("sync")
    devices = json.loads(tour("ada")("device", "list", "--json").out)
    phone = json.loads(tour("phone")("whoami", "--json").out)["device_id"]
    assert phone in [d["id"] for d in devices]
    tour.noted["3f2a"] = phone[:4]


def _cleo_starts_riverside(tour: Tour) -> None:
    cleo = tour("cleo")
    cleo("init", "--name", "Cleo")
    cleo("group", "create", "Riverside", "--relay", tour.relay.url)


def _neighbourhood_invite(tour: Tour, args: list[str]) -> Result:
    _cleo_starts_riverside(tour)
    return _invite_and_join(tour, args)


def _neighbourhood_join(tour: Tour, args: list[str]) -> Result:
    result = tour("cleo")(*args, timeout=60)
    inviting = tour.running[int(tour.noted.pop("inviting"))]
    _, err = inviting.communicate(timeout=60)
    assert inviting.returncode == 0, err
    return result


def _note_request(tour: Tour) -> None:
    tour("cleo")("sync")
    tour("ada")("sync")
    requests = json.loads(tour("ada")("request", "list", "--json").out)
    tour.noted["9c1e"] = requests[0]["id"][:4]


def _status_counts_the_unsent_offer(tour: Tour) -> None:
    """Unshown: `status` counts what the next sync sends to the neighbourhood too."""
    said = tour("ada")("status").out
    assert re.search(
        r"[1-9]\d* bundles? waiting to go out \([1-9]\d* for the neighbourhood\)", said
    ), said


def _cleo_sees_the_offer(tour: Tour) -> None:
    tour("ada")("sync")
    tour("cleo")("sync")


def _accept_and_note_the_commitment(tour: Tour, args: list[str]) -> Result:
    """The reader notes the commitment the answer names, for `commitment fulfil`."""
    result = tour("ada")(*args)
    named = re.search(r"commitment fulfil ([0-9a-f]+)", result.out)
    assert named, result.out
    tour.noted["9c1e"] = named.group(1)[:4]
    return result


TOUR: list[Step] = [
    Step("ada", "hearth --version", ("hearth 0.1.0",)),
    Step("ada", "hearth init --name Ada", ("Welcome, Ada", "hearth group create", "hearth join")),
    Step("ada", 'hearth group create "Elm Street Tools"', ("Elm Street Tools",)),
    Step(
        "ada",
        'hearth resource add "Cordless drill" --kind tool --location "Ada\'s shed"',
        ("Added Cordless drill",),
    ),
    Step(
        "ada",
        'hearth resource add "Seed potatoes" --kind food --qty 15 --unit kg',
        ("Added Seed potatoes",),
    ),
    Step("ada", "hearth resource add Compost --kind food --qty 12 --unit bags", ("Added Compost",)),
    Step("ada", "hearth resource list", ("Cordless drill", "Ada's shed", "15 kg", "12 bags")),
    Step("ada", "hearth consume potatoes --qty 2.5", ("Seed potatoes: 12.5 kg now",)),
    Step("ada", 'hearth need add "Extension lead" --by +3d', ("Extension lead",)),
    Step("ada", "hearth history", ("Ada", "Cordless drill", "Seed potatoes")),
    Step("ada", "hearth conflicts", ("No conflicts",)),
    Step("ada", "hearth export --format valueflows", ('"@context"', "Cordless drill")),
    # Sharing with the rest of the group.
    Step("ada", "hearth relay add ws://relay.example.org:8765"),
    Step("ada", "hearth invite", ("-",), run=_invite_and_join),
    Step(
        "ben",
        "hearth join 7-orchard-lantern-cobalt --relay ws://relay.example.org:8765 --name Ben",
        ("Meeting the inviter through ws://127.0.0.1:", "Elm Street Tools"),
        run=_join,
    ),
    Step("ada", "hearth invite --token", ("hearth-token-",), run=_token),
    Step("ada", "hearth sync"),
    Step(
        "ada",
        "hearth lend drill --to Ben --until +7d",
        ("Cordless drill is now with Ben until 20",),  # "for a week": the date it is due
    ),
    Step("ada", "hearth return drill", ("Cordless drill is back with Ada",)),
    Step(
        "ada",
        'hearth commitment add "Compost for the beds" --from Ada --to Ben --resource compost '
        "--qty 4",
        ("Proposed: Ada gives Ben Compost for the beds",),
    ),
    Step(
        "ben",
        "hearth commitment accept compost",
        ("'Compost for the beds' is now accepted",),
        before=_sync("ada", "ben"),
    ),
    Step("ada", "hearth serve", ("Serving 'Elm Street Tools'",), run=_serve),
    Step("ada", "hearth serve --listen 0.0.0.0:8766", ("127.0.0.1",), run=_listening_on_loopback),
    Step("ada", "hearth peer add ws://192.168.1.20:8766", run=_peer_on_loopback),
    Step("ada", "hearth status", ("ws://",)),
    Step("ada", "hearth bundle export changes.hb"),
    Step("ben", "hearth bundle import changes.hb"),
    # Who is in the group.
    Step("ada", "hearth member list", ("Ada", "Ben", "Eve", "admin")),
    Step("ada", "hearth member promote Ben", ("Ben",)),
    Step("ada", "hearth member remove Eve", ("Eve",), answer="y\n"),
    Step("ada", "hearth device list", ("Ada",), before=_second_device),
    Step("ada", "hearth device remove 3f2a", answer="y\n"),
    Step("ben", "hearth leave", ("Elm Street Tools",), answer="y\n", before=_sync("ada", "ben")),
    # Sharing with neighbouring groups.
    Step("ada", "hearth neighbourhood create Eastside", ("Eastside",)),
    Step("ada", "hearth neighbourhood invite", ("-",), run=_neighbourhood_invite),
    Step(
        "cleo",
        "hearth neighbourhood join 4-amber-kettle-sloe --relay wss://relay.example.org",
        ("Eastside",),
        run=_neighbourhood_join,
    ),
    Step("ada", "hearth resource edit Compost --shareable", ("Updated Compost",)),
    Step("ada", "hearth offer add Compost --qty 5 --until +2w", ("Compost",)),
    Step(
        "ada",
        "hearth offer list",
        ("Compost", "Elm Street Tools"),
        before=_status_counts_the_unsent_offer,
    ),
    Step("cleo", "hearth request compost --qty 2", ("Compost",), before=_cleo_sees_the_offer),
    Step("ada", "hearth request list", ("Riverside",), before=_note_request),
    Step(
        "ada",
        "hearth request accept 9c1e",
        ("Accepted", "ledgers of Elm Street Tools and Riverside"),
        run=_accept_and_note_the_commitment,
    ),
    Step("ada", "hearth commitment fulfil 9c1e", ("fulfilled",)),
    Step(
        "cleo",
        "hearth commitment list",
        ("QUANTITY", "Compost from Elm Street Tools", "2 bags"),  # not 'QTY 2'
        before=_sync("ada", "cleo"),
    ),
    Step("ada", "hearth offer list", ("3 bags",)),
]


def fill_in(tour: Tour, line: str) -> list[str]:
    """The README line as its reader would type it here."""
    for shown in EXAMPLE_RELAYS:
        line = line.replace(shown, tour.relay.url)
    for shown in SHOWN_CODES:
        line = line.replace(shown, tour.noted.get("code", shown))
    for shown in ("3f2a", "9c1e"):
        line = line.replace(f" {shown}", f" {tour.noted.get(shown, shown)}")
    return shlex.split(line)[1:]


def test_the_tour_steps_are_the_readme_commands() -> None:
    assert readme_commands() == [step.line for step in TOUR]


def test_the_members_page_shows_pictures_of_the_app_that_exist() -> None:
    from urllib.parse import unquote

    page = README.parent / "docs" / "members.md"
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text())
    assert len(pictures) >= 3
    for picture in pictures:
        assert (page.parent / unquote(picture)).is_file(), picture  # a snapshot renamed?


@pytest.fixture
def tour(tmp_path: Path) -> Iterator[Tour]:
    relay = start_relay(tmp_path / "relay")
    running = Tour(tmp_path, relay)
    yield running
    for proc in running.running:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=15)
    relay.kill(signal.SIGTERM)


@pytest.mark.process
def test_the_readme_tour_runs_in_order_in_fresh_homes(tour: Tour) -> None:
    for step in TOUR:
        if step.before:
            step.before(tour)
        args = fill_in(tour, step.line)
        if step.run:
            result = step.run(tour, args)
        elif step.answer:
            result = _answered(tour, step.who, args, step.answer)
        else:
            result = tour(step.who)(*args, check=False, timeout=60)
        said = result.out + result.err
        assert result.code == 0, f"{step.line!r} failed: {said}"
        for words in step.says:
            assert words in said, f"{step.line!r} no longer says {words!r}: {said}"


def _answered(tour: Tour, who: str, args: list[str], answer: str) -> Result:
    """A command that asks first, answered at a terminal as a member would."""
    env = {k: v for k, v in os.environ.items() if k != "HEARTH_HOME"}
    terminal, typed_at = pty.openpty()
    proc = subprocess.Popen(
        [*hearth_command(), "--home", str(tour(who).home), *args],
        stdin=typed_at,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tour.tmp,
    )
    os.close(typed_at)
    os.write(terminal, answer.encode())
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(terminal)
    return Result(proc.returncode, out, err)


class Terminal:
    """A ``hearth`` command at a terminal of its own, read and typed into as a member
    would: what it shows so far, waited for by pattern, and lines typed at its questions."""

    def __init__(self, home: Path, args: list[str], cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "HEARTH_HOME"}
        self.screen, typed_at = pty.openpty()
        self.proc = subprocess.Popen(
            [*hearth_command(), "--home", str(home), *args],
            stdin=typed_at,
            stdout=typed_at,
            stderr=typed_at,
            text=True,
            env=env,
            cwd=cwd,
        )
        os.close(typed_at)
        self.shown = ""

    def wait_for(self, pattern: str, seconds: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + seconds
        while not (found := re.search(pattern, self.shown)):
            left = deadline - time.monotonic()
            assert left > 0, f"never showed {pattern!r}: {self.shown}"
            ready, _, _ = select.select([self.screen], [], [], min(left, 1.0))
            if ready:
                try:
                    self.shown += os.read(self.screen, 4096).decode(errors="replace")
                except OSError:  # the command ended and its terminal closed
                    assert self.proc.poll() is not None
                    ended = f"ended without {pattern!r}: {self.shown}"
                    assert re.search(pattern, self.shown), ended
        return found

    def type(self, line: str) -> None:
        os.write(self.screen, f"{line}\n".encode())

    def ended(self, seconds: float = 60) -> int:
        code = self.proc.wait(timeout=seconds)
        with contextlib.suppress(OSError):
            while chunk := os.read(self.screen, 4096):
                self.shown += chunk.decode(errors="replace")
        os.close(self.screen)
        return code


def lan_prose_commands() -> list[str]:
    """The commands of the README's sentence on inviting with no relay at all."""
    text = " ".join(README.read_text().split())
    sentence = re.search(r"With no relay at all, .*?\.(?: |$)", text)
    assert sentence, "the README no longer says how to invite with no relay"
    return re.findall(r"`(hearth [^`]*)`", sentence.group(0))


@pytest.mark.process
def test_the_readmes_invite_over_the_local_network_runs_as_written(tmp_path: Path) -> None:
    """The README's prose, word for word: `hearth serve --listen 0.0.0.0:0` on the inviting
    device, then `hearth invite` there and `hearth join CODE` on a fresh device, each at a
    terminal with nothing added (the listener on loopback, not every interface; no relay
    anywhere; the inviter found by mDNS). Ben is asked his name before the inviter is asked
    to let him in. Before it: with nothing listening the invite says what to do, and a
    wrong code fails on both sides."""
    from hearth.protocol.words import WORDS
    from tests.test_invites import first_line, start_invite
    from tests.test_sync_processes import wait_until

    serve, invite, join = lan_prose_commands()
    assert (serve, invite, join) == (
        "hearth serve --listen 0.0.0.0:0",
        "hearth invite",
        "hearth join CODE",
    )
    ada = InProcess(tmp_path / "ada")
    ada("init", "--name", "Ada")
    ada("group", "create", "Allotment")
    ada("resource", "add", "Wheelbarrow", "--kind", "tool")
    refused = ada("invite", "--yes", "--timeout", "5", check=False)
    assert refused.code == 1
    assert "serve --listen" in refused.err  # no relay and nothing listening: what to do
    on_loopback = serve.replace("0.0.0.0", "127.0.0.1")  # noqa: S104 - the README's words
    serving = Terminal(ada.home, shlex.split(on_loopback)[1:], tmp_path)
    try:
        serving.wait_for(r"listening on ws://127\.0\.0\.1:\d+")
        inviting = start_invite(ada, "--yes")
        code = first_line(inviting)["code"]
        last = code.rsplit("-", 1)[1]
        wrong = code.rsplit("-", 1)[0] + "-" + WORDS[(WORDS.index(last) + 1) % len(WORDS)]
        eve = Cli(tmp_path / "eve")
        failed = eve("join", wrong, "--name", "Eve", "--timeout", "30", check=False)
        assert failed.code == 1
        out, err = inviting.communicate(timeout=30)
        assert inviting.returncode == 1, (out, err)

        asking = Terminal(ada.home, shlex.split(invite)[1:], tmp_path)
        code = asking.wait_for(r"\b\d+(?:-[a-z]+){3}\b").group(0)
        joining = Terminal(tmp_path / "ben", shlex.split(join.replace("CODE", code))[1:], tmp_path)
        joining.wait_for(r"Your name, as the group will see it")
        joining.type("Ben")
        phrase = joining.wait_for(r"Verification phrase: ([a-z ]+) —").group(1)
        asking.wait_for(r"Let Ben join the group\? \[y/N\]")
        assert phrase in asking.shown  # both saw the same four words
        asking.type("y")
        assert asking.ended() == 0, asking.shown
        assert joining.ended() == 0, joining.shown
        assert "You joined 'Allotment'" in joining.shown
        assert "Wheelbarrow" in InProcess(tmp_path / "ben")("resource", "list").out
        assert wait_until(lambda: "Ben" in ada("member", "list").out)
    finally:
        serving.proc.send_signal(signal.SIGINT)
        assert serving.ended(30) in (0, 130), serving.shown
