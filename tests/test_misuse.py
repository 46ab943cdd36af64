"""Bad inputs and hostile leftovers: a clear library error, never a raw exception or a hang."""

from __future__ import annotations

import os
from typing import Any

import pytest

import shmpubsub as sps
from shmpubsub import wakeup
from shmpubsub.names import PREFIX, SHM_DIR


@pytest.mark.parametrize("timeout", ["1", -1, float("nan"), True, [1]])
def test_bad_timeouts_are_refused(topic: str, timeout: object) -> None:
    with sps.Publisher(topic) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"pending")
        with pytest.raises(sps.InvalidArgument):
            sub.receive(timeout=timeout)  # type: ignore[arg-type]
        assert sub.receive(timeout=0).data == b"pending"


@pytest.mark.parametrize("timeout", [1e300, 10**400])
def test_huge_timeouts_mean_for_ever(topic: str, timeout: float) -> None:
    with sps.Publisher(topic) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"there")
        assert sub.receive(timeout=timeout).data == b"there"


@pytest.mark.parametrize("option", ["start", "lapped"])
def test_unhashable_modes_are_refused(topic: str, option: str) -> None:
    with sps.Publisher(topic), pytest.raises(sps.InvalidArgument):
        sps.Subscriber(topic, **{option: ["next"]})  # type: ignore[arg-type]


def test_fileno_after_close(topic: str) -> None:
    with sps.Publisher(topic):
        sub = sps.Subscriber(topic)
        sub.close()
        with pytest.raises(sps.ClosedError):
            sub.fileno()


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink"])
def test_special_file_under_a_topic_name_is_refused_not_hung_on(topic: str, kind: str, tmp_path: Any) -> None:
    path = os.path.join(SHM_DIR, PREFIX + topic)
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "symlink":  # to a file of ours that a publisher would overwrite
        target = tmp_path / "precious"
        target.write_bytes(b"precious")
        os.symlink(target, path)
    else:
        os.mkdir(path, 0o700)
    try:
        for make in (sps.Subscriber, sps.Publisher):
            with pytest.raises(sps.InvalidSegment, match="not a regular file"):
                make(topic)
            assert os.path.lexists(path)  # left alone
        if kind == "symlink":
            assert target.read_bytes() == b"precious"
    finally:
        os.rmdir(path) if kind == "directory" else os.unlink(path)


def test_socket_directory_too_long_for_a_socket_path_is_refused(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = os.path.join(str(tmp_path), "d" * (wakeup.MAX_SOCKET_DIR + 1 - len(str(tmp_path))))
    monkeypatch.setenv("SHMPUBSUB_RUNTIME_DIR", deep)
    with pytest.raises(sps.PermissionDenied, match="at most"):
        wakeup.socket_dir()
    assert not os.path.exists(deep)


def test_relative_socket_directory_is_refused_before_anything_is_created(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHMPUBSUB_RUNTIME_DIR", "relative-dir")
    with pytest.raises(sps.PermissionDenied):
        wakeup.socket_dir()
    assert not os.path.exists(os.path.join(str(tmp_path), "relative-dir"))


def test_reclaiming_a_stale_entry_keeps_the_new_owners_wake_up(topic: str) -> None:
    """A dead subscriber's entry, already reused by a live one that sleeps: reclaiming the stale
    view of it must neither free the live entry nor cancel its sleep request."""
    with sps.Publisher(topic) as pub:
        first = sps.Subscriber(topic)
        stale = pub.subscribers[0]
        first.close()
        with sps.Subscriber(topic) as second:
            second.fileno()
            assert second.try_receive() is None  # armed: its bit is set
            assert pub.subscribers[0].index == stale.index
            assert not wakeup.reclaim(pub._control, stale)  # the token no longer matches
            assert pub.subscribers[0].asleep
            pub.publish(b"wake")
            assert pub.wakeups_sent == 1
            assert second.receive(timeout=1).data == b"wake"


def test_reclaim_spares_an_entry_whose_socket_is_still_bound(topic: str) -> None:
    with sps.Publisher(topic) as pub, sps.Subscriber(topic) as sub:
        entry = pub.subscribers[0]
        assert not wakeup.reclaim(pub._control, entry)  # bound: alive, whatever its pid says
        assert [e.token for e in pub.subscribers] == [entry.token]
        pub.publish(b"x")
        assert sub.try_receive() is not None
