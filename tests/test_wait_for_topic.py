"""Subscriber(topic, wait=...): start in any order. The subscriber waits for the topic without
polling (inotify on the directory where it appears), attaches as soon as it is ready, and gives
up with TopicNotFound after the time it was given; Ctrl-C ends the wait."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import Children, get_result

import shmpubsub as sps

SCALE = float(os.environ.get("SHMPUBSUB_TEST_TIME_SCALE", "1"))


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _late_subscriber(topic: str, path: str | None, ready: Any, results: Any) -> None:
    """Waits for the topic (or ring file), then reports when it attached, the CPU time the
    wait took, and the messages it then receives until the publisher closes."""
    ready.set()
    started = time.process_time()
    if path is None:
        sub = sps.Subscriber(topic, wait=30, start="oldest")
    else:
        sub = sps.Subscriber(path=path, wait=30, start="oldest")
    with sub:
        results.put(("attached", time.monotonic(), time.process_time() - started))
        results.put(("received", [msg.data for msg in sub]))


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_subscriber_started_first_attaches_when_the_publisher_comes(topic: str, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    results, ready = ctx.Queue(), ctx.Event()
    with Children() as children:
        proc = children.start(ctx, _late_subscriber, topic, None, ready, results)
        assert ready.wait(30)
        time.sleep(0.5)  # the subscriber is waiting by now
        with sps.Publisher(topic, slots=16, slot_size=64) as pub:
            created = time.monotonic()
            kind, attached_at, cpu = get_result(results, 10, "the waiting subscriber")
            assert kind == "attached"
            for i in range(5):
                pub.publish(b"m%d" % i)
        assert get_result(results, 10, "its messages") == ("received", [b"m%d" % i for i in range(5)])
        children.join(proc, 10)
    print(f"\nattached {1e3 * (attached_at - created):.1f} ms after the topic was ready; the wait took "
          f"{1e3 * cpu:.1f} ms of CPU")
    assert attached_at - created < 0.5 * SCALE
    assert cpu < 0.2 * SCALE  # no busy loop: about 0.5 s of waiting


def test_waiting_for_a_ring_file_by_path(topic: str, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    results, ready = ctx.Queue(), ctx.Event()
    path = str(tmp_path / "prices.ring")
    with Children() as children:
        proc = children.start(ctx, _late_subscriber, topic, path, ready, results)
        assert ready.wait(30)
        time.sleep(0.3)
        with sps.Publisher(topic, slots=16, slot_size=64, path=path) as pub:
            assert get_result(results, 10, "the waiting subscriber")[0] == "attached"
            pub.publish(b"from the file")
        assert get_result(results, 10, "its messages") == ("received", [b"from the file"])
        children.join(proc, 10)


def test_a_topic_that_exists_is_attached_at_once_whatever_the_wait(topic: str) -> None:
    with sps.Publisher(topic) as pub, sps.Subscriber(topic, wait=math.inf, start="oldest") as sub:
        pub.publish(b"x")
        assert sub.receive(timeout=5).data == b"x"


def test_the_wait_ends_with_topic_not_found_after_its_time(topic: str) -> None:
    before = _open_descriptors()
    started = time.monotonic()
    with pytest.raises(sps.TopicNotFound, match=r"did not appear within 0\.3 s") as info:
        sps.Subscriber(topic, wait=0.3)
    waited = time.monotonic() - started
    assert isinstance(info.value, FileNotFoundError)
    assert 0.3 <= waited < 0.3 + 1.0 * SCALE
    with pytest.raises(sps.TopicNotFound):
        sps.Subscriber(topic, wait=0)
    with pytest.raises(sps.TopicNotFound, match="no publisher has created it"):
        sps.Subscriber(topic)  # wait=None: at once, as without the option
    assert _open_descriptors() == before  # the watch is closed


def test_waiting_in_a_directory_that_does_not_exist_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(sps.TopicNotFound, match="does not exist"):
        sps.Subscriber(path=tmp_path / "no-such-dir" / "r.ring", wait=10)


@pytest.mark.parametrize("wait", [-1, "1", True, math.nan, [1]])
def test_bad_waits_are_refused(topic: str, wait: object) -> None:
    with pytest.raises(sps.InvalidArgument, match="wait must be"):
        sps.Subscriber(topic, wait=wait)  # type: ignore[arg-type]


def _wait_for_ever(topic: str, ready: Any, results: Any) -> None:
    before = _open_descriptors()
    ready.set()
    try:
        sps.Subscriber(topic, wait=math.inf)
    except KeyboardInterrupt:
        results.put(("interrupted", time.monotonic(), _open_descriptors() - before))


def test_ctrl_c_ends_the_wait(topic: str) -> None:
    ctx = multiprocessing.get_context("fork")
    results, ready = ctx.Queue(), ctx.Event()
    with Children() as children:
        proc = children.start(ctx, _wait_for_ever, topic, ready, results)
        assert ready.wait(30)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        kind, when, left_open = get_result(results, 10, "the interrupted subscriber")
        children.join(proc, 10)
    assert kind == "interrupted" and left_open == 0
    assert when - sent < 0.5 * SCALE
