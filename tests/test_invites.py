"""Invite codes end to end: the relay's mailbox rules (sans-IO), then real ``hearth invite``
and ``hearth join`` processes meeting through a real relay on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hearth.protocol.frames import Error, Hello, Mailbox, MailboxClose, encode_frame
from hearth.protocol.mailbox import Mailboxes, MailboxLimits, Out
from relay.config import RelayConfig
from relay.core import RelayCore, ToClient
from relay.sqlite_store import SqliteStore
from tests.conftest import Cli, hearth_command
from tests.test_sync_processes import Relay, start_relay


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def relay_core(tmp_path: Path, clock: Clock) -> RelayCore:
    core = RelayCore(RelayConfig(mailbox_ttl_s=60), SqliteStore(tmp_path / "r.db"), clock=clock)
    for client in (1, 2, 3):
        core.admit(client, f"10.0.0.{client}")
        for out in core.receive(client, encode_frame(Hello(versions=[1], role="node", agent="t"))):
            assert isinstance(out, ToClient)
            core.encode(client, out.frame)  # sending the welcome opens the connection
    return core


def frames(outputs: list[object], client: int) -> list[object]:
    return [o.frame for o in outputs if isinstance(o, ToClient) and o.client == client]


def test_a_mailbox_passes_messages_between_exactly_two_sides(tmp_path: Path) -> None:
    core = relay_core(tmp_path, Clock())
    opened = core.receive(1, encode_frame(Mailbox(nameplate=7, create=True)))
    assert frames(opened, 1) == [Mailbox(nameplate=7, create=True)]
    taken = frames(core.receive(3, encode_frame(Mailbox(nameplate=7, create=True))), 3)
    assert [f.code for f in taken if isinstance(f, Error)] == ["mailbox-taken"]
    core.receive(1, encode_frame(Mailbox(nameplate=7, body=b"first")))  # waits for side two
    joined = core.receive(2, encode_frame(Mailbox(nameplate=7, body=b"second")))
    assert frames(joined, 2) == [Mailbox(nameplate=7, body=b"first")]
    assert frames(joined, 1) == [Mailbox(nameplate=7, body=b"second")]
    third = frames(core.receive(3, encode_frame(Mailbox(nameplate=7, body=b"x"))), 3)
    assert [f.code for f in third if isinstance(f, Error)] == ["mailbox-full"]
    # A side leaving burns the mailbox and tells the other.
    assert frames(core.gone(2), 1) == [MailboxClose(nameplate=7)]
    again = frames(core.receive(3, encode_frame(Mailbox(nameplate=7, body=b"x"))), 3)
    assert [f.code for f in again if isinstance(f, Error)] == ["no-such-mailbox"]


def test_mailboxes_expire_and_limit_their_size(tmp_path: Path) -> None:
    clock = Clock()
    core = relay_core(tmp_path, clock)
    core.receive(1, encode_frame(Mailbox(nameplate=9, create=True)))
    big = frames(core.receive(1, encode_frame(Mailbox(nameplate=9, body=bytes(5000)))), 1)
    assert [f.code for f in big if isinstance(f, Error)] == ["mailbox-full"]
    clock.now = 61
    late = frames(core.receive(2, encode_frame(Mailbox(nameplate=9, body=b"hi"))), 2)
    assert [f.code for f in late if isinstance(f, Error)] == ["no-such-mailbox"]


def test_nameplate_guesses_are_limited_per_address_and_over_the_whole_space() -> None:
    """Opening a mailbox one did not create is a guess: 5 at once from one address then
    one a minute, and 20 at once over the whole relay then one a minute. Creating an
    invite, and the sides of an open invite talking, are not guesses."""
    clock = Clock()
    boxes = Mailboxes(MailboxLimits(), clock)

    def codes(out: Out) -> list[str]:
        return [f.code if isinstance(f, Error) else f.TYPE for _, f in out]

    assert codes(boxes.handle(1, "inviter", Mailbox(nameplate=500, create=True))) == ["mailbox"]
    for _ in range(10):
        assert codes(boxes.handle(1, "inviter", Mailbox(nameplate=500, body=b"m"))) == []
    tried = [
        codes(boxes.handle(2, "guesser", Mailbox(nameplate=n, body=b"x"))) for n in range(1, 11)
    ]
    assert tried == [["no-such-mailbox"]] * 5 + [["too-many-guesses"]] * 5
    clock.now = 60.0  # one guess back
    assert codes(boxes.handle(2, "guesser", Mailbox(nameplate=11, body=b"x"))) == [
        "no-such-mailbox"
    ]
    assert codes(boxes.handle(2, "guesser", Mailbox(nameplate=12, body=b"x"))) == [
        "too-many-guesses"
    ]
    # Many addresses share the relay's 20 (5 + 1 spent above, 14 left, one back since).
    spread = [
        codes(boxes.handle(3, f"addr{n}", Mailbox(nameplate=100 + n, body=b"x"))) for n in range(40)
    ]
    assert spread.count(["no-such-mailbox"]) == 15
    assert spread.count(["too-many-guesses"]) == 25
    clock.now = 120.0
    # The invite was never found; its joiner gets in with the relay's next guess.
    joined = boxes.handle(4, "joiner", Mailbox(nameplate=500, body=b"hi"))
    assert codes(joined) == ["mailbox"] * 10 + ["mailbox"]


# --- real processes ---------------------------------------------------------------------


@pytest.fixture
def relay(tmp_path: Path) -> Relay:
    running = start_relay(tmp_path / "relay")
    yield running  # type: ignore[misc]
    running.kill()


def group_at(tmp_path: Path, relay_url: str) -> Cli:
    ada = Cli(tmp_path / "ada")
    ada("init", "--name", "Ada")
    ada("group", "create", "Orchard", "--relay", relay_url)
    ada("resource", "add", "Apple press", "--kind", "tool")
    ada("sync")
    return ada


def start_invite(ada: Cli, *extra: str, command: str = "") -> subprocess.Popen[str]:
    """``hearth [COMMAND] invite --json …`` running in the background (``command``:
    ``neighbourhood`` for a group's invite into a neighbourhood)."""
    env = {k: v for k, v in os.environ.items() if k != "HEARTH_HOME"}
    words = [command, "invite"] if command else ["invite"]
    return subprocess.Popen(
        [*hearth_command(), "--home", str(ada.home), *words, "--json", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def first_line(proc: subprocess.Popen[str]) -> dict[str, str]:
    assert proc.stdout is not None
    return dict(json.loads(proc.stdout.readline()))


@pytest.mark.process
def test_invite_by_code_then_join_and_sync(tmp_path: Path, relay: Relay) -> None:
    ada = group_at(tmp_path, relay.url)
    inviting = start_invite(ada, "--yes", "--timeout", "60")
    code = first_line(inviting)["code"]
    assert len(code.split("-")) == 4
    ben = Cli(tmp_path / "ben")
    joined = ben("join", code, "--relay", relay.url, "--name", "Ben", "--json")
    out, err = inviting.communicate(timeout=60)
    assert inviting.returncode == 0, err
    inviter_lines = [json.loads(line) for line in out.splitlines()]
    joiner_lines = [json.loads(line) for line in joined.out.splitlines()]
    inviter_phrase = next(x["phrase"] for x in inviter_lines if "phrase" in x)
    joiner_phrase = next(x["phrase"] for x in joiner_lines if "phrase" in x)
    assert inviter_phrase == joiner_phrase
    assert {"joined": "Ben"} in inviter_lines
    assert "Apple press" in ben("resource", "list").out
    ada("sync")
    members = {m["name"]: m["role"] for m in json.loads(ada("member", "list", "--json").out)}
    assert members == {"Ada": "admin", "Ben": "member"}
    # The code was single use.
    again = Cli(tmp_path / "eve")("join", code, "--relay", relay.url, "--name", "Eve", check=False)
    assert again.code == 1
    assert "No invite is waiting" in again.err


@pytest.mark.process
def test_a_wrong_code_fails_on_both_sides_and_burns_the_mailbox(
    tmp_path: Path, relay: Relay
) -> None:
    ada = group_at(tmp_path, relay.url)
    inviting = start_invite(ada, "--yes", "--timeout", "60")
    code = first_line(inviting)["code"]
    number, *words = code.split("-")
    wrong = "-".join([number, *words[:2], "acorn" if words[2] != "acorn" else "amber"])
    cleo = Cli(tmp_path / "cleo")
    tried = cleo("join", wrong, "--relay", relay.url, "--name", "Cleo", check=False)
    _, err = inviting.communicate(timeout=60)
    assert tried.code == 1
    assert "code was wrong" in tried.err
    assert inviting.returncode == 1
    assert "wrong" in err
    right = cleo("join", code, "--relay", relay.url, "--name", "Cleo", check=False)
    assert right.code == 1
    assert "No invite is waiting" in right.err
    assert "Orchard" not in cleo("group", "list", check=False).out


@pytest.mark.process
def test_the_inviter_can_say_no(tmp_path: Path, relay: Relay) -> None:
    ada = group_at(tmp_path, relay.url)
    inviting = start_invite(ada, "--timeout", "60")
    code = first_line(inviting)["code"]
    assert inviting.stdin is not None
    inviting.stdin.write("n\n")
    inviting.stdin.flush()
    dan = Cli(tmp_path / "dan")
    tried = dan("join", code, "--relay", relay.url, "--name", "Dan", check=False)
    inviting.communicate(timeout=60)
    assert tried.code == 1
    assert "did not let you in" in tried.err
    assert inviting.returncode == 1
    members = [m["name"] for m in json.loads(ada("member", "list", "--json").out)]
    assert members == ["Ada"]


@pytest.mark.process
def test_a_token_used_before_the_inviter_syncs_still_knows_where_to_sync(
    tmp_path: Path, relay: Relay
) -> None:
    ada = Cli(tmp_path / "ada")
    ada("init", "--name", "Ada")
    ada("group", "create", "Orchard", "--relay", relay.url)
    ada("resource", "add", "Apple press", "--kind", "tool")
    token = json.loads(ada("invite", "--token", "--json").out)["token"]
    ben = Cli(tmp_path / "ben")
    ben("join", token, "--name", "Ben")  # Ada has not synced: nothing to fetch yet
    assert ben("sync", check=False).code == 0
    ada("sync")
    ben("sync")
    assert "Apple press" in ben("resource", "list").out
    ada("sync")
    assert {m["name"] for m in json.loads(ada("member", "list", "--json").out)} == {"Ada", "Ben"}


def test_a_token_copied_out_of_a_terminal_still_joins(tmp_path: Path) -> None:
    from hearth.errors import UsageError
    from hearth.node.identity import create_identity
    from hearth.node.node import open_node
    from hearth.protocol.invite_token import decode_token, encode_token

    for name in ("ada", "ben"):
        create_identity(tmp_path / name, name=name.title())
    with open_node(tmp_path / "ada") as ada, open_node(tmp_path / "ben") as ben:
        group = ada.create_group("Allotment").id
        token = encode_token(ada.create_invite())
        # As the app shows it: wrapped at 66 columns inside a frame, copied with the frame.
        lines = [token[i : i + 66] for i in range(0, len(token), 66)]
        copied = "\n".join(f"█  {line:<66}  █" for line in lines)
        assert decode_token(copied) == decode_token(token)
        with pytest.raises(UsageError, match="damaged"):
            decode_token(copied[: len(copied) // 2])  # half a copy is still refused
        assert ben.join_with_token(decode_token(f"'{copied}'\n")).id == group


@pytest.mark.process
def test_a_relay_that_never_answers_is_given_up_on_in_seconds_with_a_reason(
    tmp_path: Path,
) -> None:
    import socket
    import time

    from hearth.protocol.invite_code import WORDS

    silent = socket.socket()  # the kernel takes connections; nobody ever answers them
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
    ada = Cli(tmp_path / "ada")
    ada("init", "--name", "Ada")
    ada("group", "create", "Orchard", "--relay", url)
    env = {k: v for k, v in os.environ.items() if k != "HEARTH_HOME"}
    code = "7-" + "-".join(WORDS[:3])
    started = time.monotonic()
    running = [
        subprocess.Popen(
            [*hearth_command(), "--home", str(home), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for home, args in (
            (tmp_path / "ben", ["join", code, "--relay", url, "--name", "Ben"]),
            (ada.home, ["sync"]),
            (ada.home, ["doctor"]),
        )
    ]
    took = [0.0] * len(running)
    while not all(took) and time.monotonic() - started < 60:
        for i, proc in enumerate(running):
            if not took[i] and proc.poll() is not None:
                took[i] = time.monotonic() - started
        time.sleep(0.05)
    (_, join_err), (sync_out, _), (doctor_out, doctor_err) = (
        p.communicate(timeout=60) for p in running
    )
    silent.close()
    assert max(took) < 15, took
    assert running[0].returncode == 1
    assert f"Cannot reach the relay {url}: it took the connection but did not answer" in join_err
    assert "within 5 s" in join_err
    assert "did not answer within 5 s" in sync_out
    # doctor says what it waits for, and waits once: no second try for the relay's clock.
    assert f"Checking {url} (up to 10 s)" in doctor_err
    assert f"{url}: not reachable (it took the connection but did not answer" in doctor_out
    assert took[2] < took[1] + 3, took  # about as long as sync, not twice as long


def test_join_without_a_relay_says_it_is_searching_the_network(tmp_path: Path) -> None:
    from hearth.protocol.invite_code import WORDS

    code = "7-" + "-".join(WORDS[:3])
    tried = Cli(tmp_path / "ben")("join", code, "--name", "Ben", "--timeout", "1", check=False)
    assert tried.code == 1
    assert "looking for the inviting device on this network (up to 1 s)" in tried.err
    bad = Cli(tmp_path / "ben")("join", code, "--relay", "127.0.0.1:40547", check=False)
    assert bad.code == 1
    assert "'127.0.0.1:40547' is not a relay address" in bad.err
    from tests.test_readme_tour import InProcess  # nothing here waits: no start-up needed

    closed = InProcess(tmp_path / "ben")("join", code, "--relay", "ws://127.0.0.1:9", check=False)
    assert closed.code == 1
    assert (
        "Cannot reach the relay ws://127.0.0.1:9: nothing answers at that address: it is not "
        "running, or the port is wrong." in closed.err
    )
    assert "Connect call failed" not in closed.err  # aiohttp's words, not a member's


@pytest.mark.process
def test_ctrl_c_at_the_invite_question_ends_it_at_once(tmp_path: Path, relay: Relay) -> None:
    import pty
    import signal
    import time

    ada = group_at(tmp_path, relay.url)
    terminal, typed_at = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "HEARTH_HOME"}
    inviting = subprocess.Popen(
        [*hearth_command(), "--home", str(ada.home), "invite", "--timeout", "60"],
        # Ctrl-C as at a terminal, also when the suite itself was started in the
        # background, where the shell has it ignored and children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdin=typed_at,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    os.close(typed_at)
    try:
        assert inviting.stdout is not None
        code = inviting.stdout.readline().strip()
        finn = ["--relay", relay.url, "--name", "Finn", "--timeout", "30"]
        joining = subprocess.Popen(
            [*hearth_command(), "--home", str(tmp_path / "finn"), "join", code, *finn],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        asked = ""
        while "Let Finn join the group?" not in asked:
            asked += inviting.stdout.read(1)
            assert asked, "the invite ended without asking"
        asked_at = time.monotonic()
        inviting.send_signal(signal.SIGINT)
        _, err = inviting.communicate(timeout=10)
        assert time.monotonic() - asked_at < 5
        joining.communicate(timeout=60)
    finally:
        os.close(terminal)
    assert inviting.returncode == 130
    assert "interrupted" in err
    assert "Traceback" not in err
