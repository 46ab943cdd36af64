"""Use after close, context managers, and garbage collection of handles left unclosed."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import pytest
from helpers import remove_topic, shm_path

import shmpubsub as sps


def run_python(code: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


# -- use after close -------------------------------------------------------------------------------


def test_publisher_use_after_close(topic: str) -> None:
    pub = sps.Publisher(topic, slots=4, slot_size=8)
    pub.publish(b"a")
    pub.close()
    assert pub.closed
    assert not os.path.exists(shm_path(topic))
    with pytest.raises(sps.ClosedError) as info:
        pub.publish(b"b")
    assert isinstance(info.value, ValueError)
    with pytest.raises(sps.ClosedError), pub.loan(1) as buf:
        buf[:] = b"x"
    assert pub.published == 1
    pub.close()  # twice is fine
    assert "closed" in repr(pub)


def test_subscriber_use_after_close(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=8) as pub:
        sub = sps.Subscriber(topic)
        pub.publish(b"a")
        sub.close()
        assert sub.closed
        for call in (sub.try_receive, sub.latest, lambda: sub.receive_into(bytearray(8))):
            with pytest.raises(sps.ClosedError) as info:
                call()
            assert isinstance(info.value, ValueError)
        sub.close()  # twice is fine
        assert "closed" in repr(sub)
        assert os.path.exists(shm_path(topic))  # a subscriber never removes the segment


@pytest.mark.parametrize("attribute", ["pending", "publisher_closed", "end_reason"])
def test_subscriber_state_after_close_does_not_crash(topic: str, attribute: str) -> None:
    code = f"""
        import shmpubsub as sps
        with sps.Publisher({topic!r}, slots=4, slot_size=8) as pub:
            sub = sps.Subscriber({topic!r})
            pub.publish(b"a")
            sub.close()
            try:
                print(repr(sub.{attribute}))
            except sps.ClosedError:
                print("ClosedError")
    """
    try:
        result = run_python(code)
    finally:
        remove_topic(topic)  # a crashed child never closed its publisher
    assert result.returncode == 0, f"exit status {result.returncode}: {result.stderr[-500:]}"


def test_context_managers_close(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=8) as pub:
        with sps.Subscriber(topic) as sub:
            pub.publish(b"x")
            assert not sub.closed and not pub.closed
        assert sub.closed
    assert pub.closed
    assert not os.path.exists(shm_path(topic))
    with pytest.raises(ZeroDivisionError), sps.Publisher(topic, slots=4, slot_size=8) as pub2:
        raise ZeroDivisionError
    assert pub2.closed
    assert not os.path.exists(shm_path(topic))


def test_subscriber_outlives_publisher_close(topic: str) -> None:
    pub = sps.Publisher(topic, slots=4, slot_size=8)
    with sps.Subscriber(topic) as sub:
        for i in range(3):
            pub.publish(b"m%d" % i)
        assert not sub.publisher_closed
        pub.close()
        assert not os.path.exists(shm_path(topic))
        assert sub.publisher_closed
        assert [m.data for m in iter(sub.try_receive, None)] == [b"m0", b"m1", b"m2"]
        assert sub.latest() == sps.Message(b"m2", 2)


# -- garbage collection ----------------------------------------------------------------------------


def test_unclosed_publisher_warns_and_removes_its_segment(topic: str) -> None:
    with pytest.warns(ResourceWarning, match="unclosed"):
        pub = sps.Publisher(topic, slots=4, slot_size=8)
        pub.publish(b"x")
        assert os.path.exists(shm_path(topic))
        del pub
        gc.collect()
    assert not os.path.exists(shm_path(topic))


def test_unclosed_subscriber_warns(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=8) as pub:
        with pytest.warns(ResourceWarning, match="unclosed"):
            sub = sps.Subscriber(topic)
            del sub
            gc.collect()
        assert pub.publish(b"fine") == 0
        assert os.path.exists(shm_path(topic))


def test_closed_handles_do_not_warn(topic: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        pub = sps.Publisher(topic, slots=4, slot_size=8)
        sub = sps.Subscriber(topic)
        sub.close()
        pub.close()
        del pub, sub
        gc.collect()
