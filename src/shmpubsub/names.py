"""Topic names and the one prefix every object the library creates carries."""

from __future__ import annotations

import re

from .errors import InvalidArgument

#: Every segment shmpubsub creates is named PREFIX + topic (under /dev/shm).
PREFIX = "shmpubsub."
#: Where Linux shows POSIX shared-memory objects as files.
SHM_DIR = "/dev/shm"
#: Long enough for real names, short enough for every derived name
#: (segments under NAME_MAX, socket paths under sockaddr_un's 108 bytes).
MAX_TOPIC_LENGTH = 64

_VALID = re.compile(r"[A-Za-z0-9._-]+")


def validate_topic(topic: object) -> str:
    """Returns *topic* if it is a valid topic name, else raises InvalidArgument."""
    if not isinstance(topic, str):
        raise InvalidArgument(f"topic name must be a str, not {type(topic).__name__}")
    if not topic:
        raise InvalidArgument("topic name must not be empty")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise InvalidArgument(f"topic name is {len(topic)} characters long; the limit is {MAX_TOPIC_LENGTH}")
    if not _VALID.fullmatch(topic):
        raise InvalidArgument(f"topic name {topic!r} may only contain letters, digits, '.', '_' and '-'")
    if topic in (".", ".."):  # harmless behind the prefix, but a name that looks like a path trick is one
        raise InvalidArgument(f"topic name {topic!r} is not allowed")
    return topic


#: The control segment of topic T is PREFIX + T + CONTROL_SUFFIX: '@' is not allowed in
#: topic names, so no topic's data segment can collide with another's control segment.
CONTROL_SUFFIX = "@ctl"


def segment_name(topic: str, suffix: str = "") -> str:
    """The shared-memory object name of a topic (as passed to shm_open)."""
    return "/" + PREFIX + validate_topic(topic) + suffix


def socket_name(token: int) -> str:
    """The file name of a subscriber's wake-up socket, made from its control entry's token
    (csrc/wake.c makes the same: PREFIX, then 16 lowercase hex digits)."""
    return f"{PREFIX}{token:016x}"
