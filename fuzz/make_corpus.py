"""Writes the fuzzing seed corpus: real segments, made by the library, in states worth starting
from (empty, lapped, with skip markers, an aborted loan, subscribers attached and asleep).

    python fuzz/make_corpus.py fuzz/corpus

Each file is the image of a data segment (``*.data``) or a control segment (``*.ctl``). The
fuzz target tries every input as both kinds, so the two sets also seed each other. The
``found-*`` files beside them are inputs libFuzzer found that reach new code, kept after
``fuzz_segment -merge=1`` (docs/reliability.md).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from contextlib import ExitStack

import shmpubsub as sps
from shmpubsub.names import CONTROL_SUFFIX, PREFIX, SHM_DIR


def _image(topic: str, suffix: str = "") -> bytes:
    with open(os.path.join(SHM_DIR, PREFIX + topic + suffix), "rb") as f:
        return f.read()


def _empty(pub: sps.Publisher, stack: ExitStack) -> None:
    pass


def _three(pub: sps.Publisher, stack: ExitStack) -> None:
    for i in range(3):
        pub.publish((b"message %d" % i)[: pub.slot_size])


def _lapped(pub: sps.Publisher, stack: ExitStack) -> None:
    for i in range(3 * pub.slots + 1):
        pub.publish(bytes([i % 251]) * min(i, pub.slot_size))


def _skipped(pub: sps.Publisher, stack: ExitStack) -> None:
    pub.publish(b"before"[: pub.slot_size])
    pub.skip(pub.slots + 1)
    pub.publish(b"after"[: pub.slot_size])


def _aborted_loan(pub: sps.Publisher, stack: ExitStack) -> None:
    pub.publish(b"kept"[: pub.slot_size])
    try:
        with pub.loan(min(4, pub.slot_size)) as buf:
            buf[:] = b"gone"[: len(buf)]
            raise KeyError("abort")
    except KeyError:
        pass


def _sleepers(pub: sps.Publisher, stack: ExitStack) -> None:
    pub.publish(b"seen"[: pub.slot_size])
    for _ in range(min(3, pub.max_subscribers)):
        sub = stack.enter_context(sps.Subscriber(pub.topic, start="oldest"))
        sub.try_receive()
        sub._reader.arm()  # a subscriber about to sleep: its bit is set


def _closed(pub: sps.Publisher, stack: ExitStack) -> None:
    pub.publish(b"last"[: pub.slot_size])
    pub._writer.close()  # the closed flag, as subscribers see it after close()


STATES: dict[str, Callable[[sps.Publisher, ExitStack], None]] = {
    "empty": _empty,
    "three": _three,
    "lapped": _lapped,
    "skipped": _skipped,
    "aborted-loan": _aborted_loan,
    "sleepers": _sleepers,
    "closed": _closed,
}
# (slots, slot_size, max_subscribers): small enough to keep inputs a few KiB long.
GEOMETRIES = [(1, 0, 1), (2, 13, 2), (4, 64, 4), (2, 1100, 65)]


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for state, make in STATES.items():
        for slots, slot_size, max_subscribers in GEOMETRIES:
            topic = f"corpus-{uuid.uuid4().hex[:12]}"
            with ExitStack() as stack:
                pub = stack.enter_context(
                    sps.Publisher(topic, slots=slots, slot_size=slot_size, max_subscribers=max_subscribers)
                )
                make(pub, stack)
                name = f"{state}-{slots}x{slot_size}-{max_subscribers}"
                for suffix, kind in (("", "data"), (CONTROL_SUFFIX, "ctl")):
                    with open(os.path.join(out, f"{name}.{kind}"), "wb") as f:
                        f.write(_image(topic, suffix))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus"))
