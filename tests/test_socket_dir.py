"""The socket directory: private to its user, chosen by SHMPUBSUB_RUNTIME_DIR, checked on every use."""

from __future__ import annotations

import os
import stat
from typing import Any

import pytest
from helpers import socket_path

import shmpubsub as sps
from shmpubsub import Publisher, Subscriber, wakeup
from shmpubsub.names import PREFIX

# --------------------------------------------------------------------------------------------
# 9. The socket directory is private
# --------------------------------------------------------------------------------------------


def test_socket_directory_is_private_and_holds_the_sockets(topic: str) -> None:
    directory = wakeup.socket_dir()
    st = os.lstat(directory)
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.geteuid()
    with Publisher(topic) as pub, Subscriber(topic), Subscriber(topic):
        for entry in pub.subscribers:
            path = socket_path(entry.token)
            assert os.path.dirname(path) == directory
            assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_check_private_dir_accepts_only_private_directories(tmp_path: Any) -> None:
    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    os.chmod(good, 0o700)
    wakeup.check_private_dir(str(good))

    wide = tmp_path / "wide"
    wide.mkdir()
    os.chmod(wide, 0o755)
    with pytest.raises(sps.PermissionDenied, match="0700"):
        wakeup.check_private_dir(str(wide))
    os.chmod(wide, 0o710)
    with pytest.raises(sps.PermissionDenied):
        wakeup.check_private_dir(str(wide))

    link = tmp_path / "link"
    link.symlink_to(good)  # a symlink to a perfectly private directory is still refused
    with pytest.raises(sps.PermissionDenied, match="not a directory"):
        wakeup.check_private_dir(str(link))

    plain = tmp_path / "file"
    plain.write_text("")
    os.chmod(plain, 0o700)
    with pytest.raises(sps.PermissionDenied):
        wakeup.check_private_dir(str(plain))

    with pytest.raises(sps.PermissionDenied):
        wakeup.check_private_dir("relative/dir")
    with pytest.raises(FileNotFoundError):
        wakeup.check_private_dir(str(tmp_path / "missing"))


def test_socket_dir_from_environment_is_created_private(tmp_path: Any, monkeypatch: Any) -> None:
    chosen = tmp_path / "sockets"
    monkeypatch.setenv("SHMPUBSUB_RUNTIME_DIR", str(chosen))
    assert wakeup.socket_dir() == str(chosen)
    assert stat.S_IMODE(os.lstat(chosen).st_mode) == 0o700
    os.chmod(chosen, 0o755)
    with pytest.raises(sps.PermissionDenied):
        wakeup.socket_dir()


def test_subscriber_refuses_a_socket_directory_opened_up_later(
    topic: str, tmp_path: Any, monkeypatch: Any
) -> None:
    chosen = tmp_path / "sockets"
    monkeypatch.setenv("SHMPUBSUB_RUNTIME_DIR", str(chosen))
    with Publisher(topic):
        os.chmod(chosen, 0o755)
        try:
            with pytest.raises(sps.PermissionDenied):
                Subscriber(topic)
        finally:
            os.chmod(chosen, 0o700)
    assert [n for n in os.listdir(chosen) if n.startswith(PREFIX)] == []


def test_a_socket_directory_made_again_in_the_same_mount_namespace_still_carries_wakeups(
    topic: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within one mount namespace the path is what counts: a directory removed and made again
    (a tmpfs remounted, a cleaner that removed it) is another inode but still the one the
    publisher sends to, so subscribers keep sleeping until woken instead of polling."""
    import warnings

    sockets = str(tmp_path / "sockets")
    monkeypatch.setenv("SHMPUBSUB_RUNTIME_DIR", sockets)
    with Publisher(topic) as pub:
        os.rename(sockets, sockets + ".old")  # the old one still exists: the new gets another inode
        os.mkdir(sockets, 0o700)
        os.rmdir(sockets + ".old")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "cannot be woken" warning
            with Subscriber(topic) as sub:
                sub.fileno()
                assert sub.try_receive() is None  # armed: asleep until woken
                pub.publish(b"wakes it")
                assert pub.wakeups_sent == 1
                assert sub.receive(timeout=5).data == b"wakes it"
