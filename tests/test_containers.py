"""A subscriber in a container that shares /dev/shm with the publisher but not the wake-up
socket directory: it must not wait for wake-ups that never come. It warns, and polls instead.
The container is a mount namespace (`unshare --mount`, root only) where the directory is hidden
or replaced by another under the same path."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from helpers import read_report, report, run_function, stop_process, unshare_unavailable

import shmpubsub as sps

REASON = unshare_unavailable("--mount")
if REASON is not None:
    print(f"\ntest_containers: skipped: {REASON}", file=sys.stderr)
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def passive_subscriber(topic: str) -> int:
    """Attaches (reporting the warning it gave), then receives two messages by blocking calls."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sub = sps.Subscriber(topic, start="oldest")
    with sub:
        report(warnings=[str(w.message) for w in caught if w.category is RuntimeWarning])
        got = [sub.receive(timeout=10).data.decode() for _ in range(2)]
        try:
            sub.fileno()
        except sps.ShmPubSubError as e:
            report(got=got, fileno=str(e))
    return 0


def _in_container(topic: str, mount_over: str) -> subprocess.Popen[str]:
    """The subscriber, in a mount namespace where an empty private tmpfs covers *mount_over*."""
    script = 'mount -t tmpfs -o mode=700 tmpfs "$1" && shift && exec "$@"'
    prefix = ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", mount_over)
    return run_function("test_containers", "passive_subscriber", topic, prefix=prefix)


@pytest.mark.parametrize("where", ["another directory under the same path", "no such directory"])
def test_without_the_publishers_socket_directory_a_subscriber_polls(
    topic: str, where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A socket directory of this test's own, two levels down: covering the directory itself
    # gives the subscriber another one under its path; covering its parent leaves none at all
    # (and hides nothing else the subscriber needs, as a tmpfs over /tmp would).
    sockets = tmp_path / "run" / "sockets"
    sockets.parent.mkdir()
    monkeypatch.setenv("SHMPUBSUB_RUNTIME_DIR", str(sockets))
    mount_over = str(sockets if where.startswith("another") else sockets.parent)
    with sps.Publisher(topic, slots=8, slot_size=64) as pub:
        inside = _in_container(topic, mount_over)
        try:
            (warning,) = read_report(inside)["warnings"]
            another = where.startswith("another")
            why = "another directory than its publisher's" if another else "does not exist"
            assert why in warning and "poll the ring" in warning
            assert pub.subscribers == []  # it claimed no entry: nobody will try to wake it
            pub.publish(b"one")
            time.sleep(0.2)  # it waits for the second one, polling
            pub.publish(b"two")
            ended = read_report(inside)
            assert ended["got"] == ["one", "two"]
            assert "cannot register for wake-ups" in ended["fileno"]
            assert inside.wait(10) == 0
            assert pub.wakeup_failures == 0
        finally:
            stop_process(inside)
