"""Handles closed from another thread: never a crash, never a hang.

cffi releases the GIL around every C call, so one thread's close() can run while another
thread is inside a call that reads the mapping; close() must wait for such calls and wake a
thread that sleeps in receive()."""

from __future__ import annotations

import threading
import time

import pytest

import shmpubsub as sps


def _in_thread(target: object) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()  # type: ignore[operator]
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


@pytest.mark.parametrize("spin_us", [1e6, 0.0], ids=["spinning", "sleeping"])
def test_close_from_another_thread_ends_a_blocked_receive(topic: str, spin_us: float) -> None:
    with sps.Publisher(topic, slots=4, slot_size=64):
        sub = sps.Subscriber(topic, spin_us=spin_us)
        thread, errors = _in_thread(sub.receive)
        time.sleep(0.2)  # let it spin, or fall asleep
        began = time.monotonic()
        sub.close()
        thread.join(5)
        assert not thread.is_alive(), "receive() still blocked after close()"
        assert time.monotonic() - began < 1.0
        assert len(errors) == 1 and isinstance(errors[0], sps.ClosedError), errors
        with pytest.raises(sps.ClosedError):
            sub.receive(timeout=0)


def test_close_from_another_thread_while_publishing_large_messages(topic: str) -> None:
    payload = bytes(1 << 20)
    pub = sps.Publisher(topic, slots=4, slot_size=1 << 20)

    def publish_forever() -> None:
        while True:
            pub.publish(payload)

    thread, errors = _in_thread(publish_forever)
    time.sleep(0.2)
    pub.close()
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], sps.ClosedError), errors


def test_close_from_another_thread_while_reading_large_messages(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=1 << 20) as pub:
        sub = sps.Subscriber(topic, start="oldest")
        payload = bytes(1 << 20)
        for _ in range(4):
            pub.publish(payload)

        def read_forever() -> None:
            while True:
                sub.latest()

        thread, errors = _in_thread(read_forever)
        time.sleep(0.2)
        sub.close()
        thread.join(5)
        assert not thread.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], sps.ClosedError), errors
