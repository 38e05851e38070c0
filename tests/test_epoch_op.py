"""The epoch op's wraps: the new secret for each device that stays, and older epochs handed
on to a device that was left out of them by a removal that did not count after all."""

from __future__ import annotations

import os

import pytest

from hearth.crypto import KemKey, seal_to
from hearth.errors import ProtocolError
from hearth.protocol import codec
from hearth.protocol.epoch_op import (
    Carried,
    EpochOp,
    decode_epoch_op,
    make_epoch_op,
    make_hand_on,
    open_hand_on,
)

SECRET = b"s" * 32
OLD = Carried(number=1, epoch_id=b"e" * 32, secret=b"o" * 32, excluded=(b"d" * 32,))


def test_each_device_opens_the_secret_and_only_its_own_carried_epochs() -> None:
    ben, cat, dan = KemKey.generate(), KemKey.generate(), KemKey.generate()
    op = decode_epoch_op(
        make_epoch_op(
            number=2,
            secret=SECRET,
            recipients={b"b" * 32: ben.public, b"c" * 32: cat.public},
            excluded=[b"x" * 32],
            random_bytes=os.urandom,
            carried={ben.public: [OLD]},
        ).encode()
    )
    assert op.open_for(ben) == (SECRET, (OLD,))
    assert op.open_for(cat) == (SECRET, ())
    assert op.secret_for(cat) == SECRET
    assert op.open_for(dan) is None
    assert op.given == (b"b" * 32, b"c" * 32)


def test_an_op_written_before_ops_named_their_devices_still_reads() -> None:
    ben = KemKey.generate()
    new = make_epoch_op(
        number=3,
        secret=SECRET,
        recipients={b"b" * 32: ben.public},
        excluded=[],
        random_bytes=os.urandom,
    )
    old = EpochOp(number=new.number, nonce=new.nonce, excluded=new.excluded, wraps=new.wraps)
    assert len(codec.decode(old.encode())) == 4  # type: ignore[arg-type]
    again = decode_epoch_op(old.encode())
    assert again.given is None
    assert again.secret_for(ben) == SECRET


def test_a_damaged_carried_part_still_gives_the_secret() -> None:
    ben = KemKey.generate()
    op = EpochOp(
        number=2,
        nonce=b"n" * 16,
        excluded=(),
        wraps=(seal_to(ben.public, SECRET + b"\xff\x00garbage", os.urandom),),
    )
    assert op.open_for(ben) == (SECRET, ())


def test_a_hand_on_gives_each_device_only_the_epochs_meant_for_it() -> None:
    ben, cat, eve = (KemKey.generate(os.urandom) for _ in range(3))
    old = Carried(number=1, epoch_id=b"e" * 32, secret=b"s" * 32, excluded=(b"B" * 32,))
    older = Carried(number=0, epoch_id=b"f" * 32, secret=b"t" * 32, excluded=())
    payload = make_hand_on({ben.public: [older, old], cat.public: [old]}, os.urandom)
    assert open_hand_on(payload, ben) == (older, old)
    assert open_hand_on(payload, cat) == (old,)
    assert open_hand_on(payload, eve) == ()
    with pytest.raises(ProtocolError):
        open_hand_on(codec.encode([1, 2]), ben)
