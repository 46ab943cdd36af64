"""One message's way through, piece by piece, in one process: publish, then take it at once.

    python benchmarks/hop.py

Times four ways of doing the same hop on a 64-byte topic (best of 15 x 3 x 2000): the two bare
cffi calls, the same plus the bytes and the Message built in Python (what the library did
before _fastpath), the two calls of _fastpath that the library makes, and the public API. The
differences are what each layer costs (docs/benchmarks.md).
"""

from __future__ import annotations

import uuid

from interleaved import best_times, report

import shmpubsub as sps
from shmpubsub._ffi import ffi, lib
from shmpubsub.message import Message


def main() -> None:
    topic = f"hop-{uuid.uuid4().hex[:8]}"
    with sps.Publisher(topic, slots=4096, slot_size=64) as pub, sps.Subscriber(topic, spin_us=1e6) as sub:
        reader, writer = sub._reader, pub._writer
        names = {
            "b": bytes(64),
            "W": writer._w,
            "R": reader._r,
            "S": reader._scratch,
            "publish": pub.publish,
            "receive": sub.receive,
            "send": writer.publish,
            "rwait": reader.read_wait,
            "take": lib.sps_take_wait,
            "lpub": lib.sps_publish,
            "unpack": ffi.unpack,
            "Message": Message,
        }
        hops = {
            "two bare cffi calls": "lpub(W, b, 64); take(R)",
            "+ bytes and Message": "lpub(W, b, 64); n = take(R); Message(unpack(S, n), R.last_seq)",
            "the _fastpath calls": "send(b); rwait(10_000_000)",
            "the public API": "publish(b); receive()",
        }
        best = best_times(hops, names)
        report(best, 24)


if __name__ == "__main__":
    main()
