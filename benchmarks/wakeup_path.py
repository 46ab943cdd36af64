"""The blocking path's own work, piece by piece, in one process: no other process to wake.

    python benchmarks/wakeup_path.py

Each round arms the subscriber (as a receive() about to sleep does), publishes one 64-byte
message, which finds the subscriber armed and sends it a wake-up datagram, then takes the
message the way a woken receive() would, and drains the datagram. Times, best of 15 x 3 x 2000:

- the datagram sent from C, in the publishing call (the library's way);
- the datagram sent from Python: the sleepers collected through cffi, then socket.sendto (the
  library's way before csrc/wake.c);
- the wake-up read as receive() does (epoll, then the take, in one C call), against epoll from
  Python and then the take;
- a plain publish and take with nobody asleep, for scale.

What is left out is the wake-up itself (the scheduler, the other core): benchmarks/floors.py
measures that, and compare.py the whole.
"""

from __future__ import annotations

import socket
import uuid

from interleaved import best_times, report

import shmpubsub as sps
from shmpubsub._core.wake import drain
from shmpubsub._ffi import ffi, lib
from shmpubsub.names import socket_name


def main() -> None:
    topic = f"wake-{uuid.uuid4().hex[:8]}"
    with sps.Publisher(topic, slots=4096, slot_size=64) as pub, sps.Subscriber(topic, spin_us=0) as sub:
        reader, writer, wake = sub._reader, pub._writer, sub._waiter._wake
        assert wake is not None and sub._waiter._epoll is not None
        control = pub._control
        indices = ffi.new("uint32_t[]", control.max_subscribers)
        tokens = ffi.new("uint64_t[]", control.max_subscribers)
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.setblocking(False)

        def send_from_python() -> None:
            """What Waker.wake_sleepers did before the sends moved to C."""
            n = lib.sps_collect_sleepers(control._c, indices, tokens, control.max_subscribers)
            for token in ffi.unpack(tokens, n):
                sender.sendto(b"\x01", f"{control.socket_dir}/{socket_name(token)}")

        names = {
            "b": bytes(64),
            "W": writer._w,
            "arm": reader.arm,
            "read": reader.read,
            "sleep_read": reader.sleep_read,
            "poll": sub._waiter._epoll.poll,
            "publish": pub.publish,
            "lpub": lib.sps_publish,
            "send_py": send_from_python,
            "drain": drain,
            "fd": wake.sock.fileno(),
        }
        rounds = {
            "nobody asleep: publish, take": "publish(b); read()",
            "wake-up sent from C": "arm(); publish(b); drain(fd); read()",
            "wake-up sent from Python": "arm(); lpub(W, b, 64); send_py(); drain(fd); read()",
            "woken: epoll and take in one C call": "arm(); publish(b); sleep_read(0); drain(fd)",
            "woken: epoll from Python, then take": "arm(); publish(b); poll(0); read(); drain(fd)",
        }
        best = best_times(rounds, names)
        sender.close()
        report(best, 38)


if __name__ == "__main__":
    main()
