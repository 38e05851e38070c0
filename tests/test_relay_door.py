"""The door every accepted socket passes (relay/door.py) and the descriptor plan made at
start (relay/cli.py), without sockets: a fake clock and plain numbers."""

from __future__ import annotations

import resource

from relay.cli import plan_descriptors
from relay.door import Door


def test_sockets_are_counted_per_address_and_in_all_and_timed_out_until_through() -> None:
    now = [0.0]
    door = Door(max_sockets=5, per_address=2, timeout_s=10.0, clock=lambda: now[0])
    assert door.enter("a1", "198.51.100.1") == (None, None)
    assert door.enter("a2", "198.51.100.1") == (None, None)
    assert door.enter("a3", "198.51.100.1") == ("connection_limit", None)  # its share
    for n in range(3):
        assert door.enter(f"b{n}", f"192.0.2.{n}") == (None, None)
    door.through("b0")
    now[0] = 10.5
    assert sorted(key for key, _ in door.overdue()) == ["a1", "a2", "b1", "b2"]
    door.left("a1")
    assert door.enter("a4", "198.51.100.1") == (None, None)  # a share freed is free again
    assert door.enter("c", "192.0.2.99") == (None, "a2")  # full: the oldest pending goes
    assert len(door) == 5


def test_a_banned_address_is_refused_at_the_door_but_never_a_proxy_of_ours() -> None:
    door = Door(
        max_sockets=5,
        per_address=2,
        timeout_s=10.0,
        clock=lambda: 0.0,
        from_proxy=lambda address: address == "127.0.0.1",
        banned=lambda address: address.startswith(("198.51.100.", "127.")),
    )
    assert door.enter("a", "198.51.100.1") == ("banned", None)
    assert door.enter("b", "127.0.0.1") == (None, None)  # its clients are judged one by one
    assert door.enter("c", "192.0.2.1") == (None, None)


def test_when_full_the_oldest_half_open_socket_makes_room_never_a_handshaken_one() -> None:
    door = Door(
        max_sockets=3,
        per_address=1,
        timeout_s=10.0,
        clock=lambda: 0.0,
        from_proxy=lambda address: address == "10.0.0.1",  # many clients: never per address
    )
    for n in range(3):
        assert door.enter(n, "10.0.0.1") == (None, None)
    for n in range(3):
        door.through(n)
    assert door.enter(3, "10.0.0.1") == ("connection_limit", None)  # all handshaken: refused
    door.left(0)
    assert door.enter(4, "10.0.0.1") == (None, None)
    assert door.enter(5, "10.0.0.1") == (None, 4)
    assert door.enter(6, "10.0.0.1") == (None, 5)


def test_the_descriptor_limit_is_raised_where_it_can_be_and_explained_where_not() -> None:
    assert plan_descriptors(2000, 4096, 4096) == (4096, 2000, "")
    assert plan_descriptors(2000, 1024, 524288) == (2192, 2000, "")
    assert plan_descriptors(2000, 1024, resource.RLIM_INFINITY) == (2192, 2000, "")
    limit, fits, advice = plan_descriptors(2000, 1024, 1024)
    assert (limit, fits) == (1024, 1024 - 192)
    assert "LimitNOFILE=2192" in advice
    assert "max_connections = 2000" in advice
