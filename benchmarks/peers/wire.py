"""What travels: every message starts with its sequence number (little-endian u64); the rest is
a fixed pattern, so a receiver can check a whole payload against what the sender must have sent.
Two sequence numbers are reserved for the harness's own messages (16 bytes long)."""

from __future__ import annotations

import struct

HDR = struct.Struct("<Q")
PROBE = (1 << 64) - 1  # "are you there": sent until every receiver has seen one
END = (1 << 64) - 2  # end of the stream
PROBE_MSG = HDR.pack(PROBE) + bytes(8)
END_MSG = HDR.pack(END) + bytes(8)
MIN_SIZE = 16
_PATTERN = bytes((i * 7 + 3) & 0xFF for i in range(251))

DEFAULT_SIZES = [64, 4096, 65536, 1 << 20]
BUFFER_BYTES = 64 << 20  # per-receiver buffering given to every transport that has a knob for it


def payload_for(seq: int, size: int) -> bytearray:
    """The message *seq* of a stream of *size*-byte messages."""
    buf = bytearray((_PATTERN * (size // len(_PATTERN) + 1))[:size])
    HDR.pack_into(buf, 0, seq)
    return buf


def depth_for(size: int) -> int:
    """Messages of *size* bytes every transport may buffer per receiver (where it can be told):
    a power of two, at most 4096 and at most BUFFER_BYTES worth, at least 32."""
    depth = 4096
    while depth > 32 and depth * size > BUFFER_BYTES:
        depth //= 2
    return depth


def batch_for(size: int) -> int:
    """Messages per batch in batch modes: 64, or fewer to keep a batch within 256 KiB."""
    return max(1, min(64, (256 << 10) // size))
