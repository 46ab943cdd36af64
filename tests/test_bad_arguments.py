"""Bad arguments to Publisher and Subscriber are refused before anything is made."""

from __future__ import annotations

import os

import pytest
from helpers import shm_path

import shmpubsub as sps

# -- bad arguments ---------------------------------------------------------------------------------

BAD_NAMES = [
    "",
    "a" * 65,
    "/",
    " ",
    "a b",
    "../x",
    "x/..",
    "a/b",
    "/abs",
    "tab\t",
    "nl\n",
    "nul\0",
    "é",
    "a:b",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_topic_names(name: str) -> None:
    for make in (sps.Publisher, sps.Subscriber, sps.Segment.create, sps.Segment.open):
        with pytest.raises(sps.InvalidArgument) as info:
            make(name)
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", [b"bytes", 5, None, ["x"]], ids=repr)
def test_non_str_topic_names(name: object) -> None:
    for make in (sps.Publisher, sps.Subscriber, sps.Segment.create, sps.Segment.open):
        with pytest.raises((sps.InvalidArgument, sps.InvalidType)) as info:
            make(name)  # type: ignore[arg-type]
        assert isinstance(info.value, (ValueError, TypeError))
        assert "str" in str(info.value)


def test_good_topic_names(topic: str) -> None:
    names = [(topic + "-" + "x" * 64)[:64], f"{topic}.a_b-c", f"..{topic}..", f"_{topic}", f"-{topic}"]
    for name in names:
        with sps.Publisher(name, slots=2, slot_size=64) as pub, sps.Subscriber(name, start="oldest") as sub:
            assert os.path.exists(shm_path(name))
            pub.publish(name.encode())
            assert sub.try_receive() == sps.Message(name.encode(), 0)
        assert not os.path.exists(shm_path(name))


@pytest.mark.parametrize("slots", [0, -1, -4, 3, 6, 1000, 2**31, 2**64])
def test_bad_slot_counts(topic: str, slots: int) -> None:
    with pytest.raises(sps.InvalidArgument) as info:
        sps.Publisher(topic, slots=slots, slot_size=8)
    assert isinstance(info.value, ValueError)
    assert str(slots) in str(info.value)


@pytest.mark.parametrize("slot_size", [-1, -4096, 2**31 + 1, 2**64])
def test_bad_slot_sizes(topic: str, slot_size: int) -> None:
    with pytest.raises(sps.InvalidArgument) as info:
        sps.Publisher(topic, slots=4, slot_size=slot_size)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("slots", "slot_size"), [(4.0, 8), ("4", 8), (4, 8.0), (4, None)])
def test_non_int_geometry(topic: str, slots: object, slot_size: object) -> None:
    with pytest.raises(sps.InvalidType) as info:
        sps.Publisher(topic, slots=slots, slot_size=slot_size)  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("mode", [-1, 0o1000, 0o4755, "0600", 1.5, None])
def test_bad_modes(topic: str, mode: object) -> None:
    with pytest.raises(sps.InvalidArgument) as info:
        sps.Publisher(topic, slots=2, slot_size=8, mode=mode)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("start", "lapped"),
    [
        ("bogus", "oldest"),
        ("", "oldest"),
        ("NEXT", "oldest"),
        ("next", "bogus"),
        ("next", "next"),
        ("next", None),
    ],
)
def test_bad_start_and_lapped(topic: str, start: object, lapped: object) -> None:
    with pytest.raises(sps.InvalidArgument) as info:
        sps.Subscriber(topic, start=start, lapped=lapped)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    with sps.Publisher(topic, slots=2, slot_size=8), pytest.raises(sps.InvalidArgument):
        sps.Subscriber(topic, start=start, lapped=lapped)  # type: ignore[arg-type]


def test_subscriber_without_publisher(topic: str) -> None:
    with pytest.raises(sps.TopicNotFound) as info:
        sps.Subscriber(topic)
    assert isinstance(info.value, FileNotFoundError)
    assert topic in str(info.value)
