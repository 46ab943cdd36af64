"""Self-checking payloads, shared by the multi-process tests and the crash soak (tests/soak.py).

Every message carries its own sequence number, its total length and a CRC-32, and its body is
derived deterministically from its sequence number, so a subscriber can tell an intact message
from a torn one (bytes of two different messages), a stale one or a misnumbered one without any
help from the library. :func:`check` is that checker.
"""

from __future__ import annotations

import random
import struct
import zlib

from shmpubsub import Publisher

# --------------------------------------------------------------------------------------------
# Self-checking payloads
#
#   [ seq: u64 LE ][ total length: u32 LE ][ body ... ][ crc32: u32 LE ]
#
# The body is a slice of a fixed pseudo-random pool; its offset and the message length depend on
# seq (through seq % _PERIOD, so consecutive messages, and messages one ring apart, differ in both).
# The CRC covers body then header: crc32(header, crc32(body)) == crc32(body + header). That order
# lets the publisher cache the body's CRC per shape and publish at full speed, while the checker
# still computes it over the bytes it actually received.
# --------------------------------------------------------------------------------------------

_HEADER = struct.Struct("<QI")
_OVERHEAD = _HEADER.size + 4  # header + trailing CRC
_POOL_LEN = 160 * 1024
_POOL = random.Random(0x5EED).randbytes(_POOL_LEN)  # identical in every process
_POOL_VIEW = memoryview(_POOL)
_PERIOD = 997  # a prime: no ring size used here divides it

# variant -> (smallest, largest) total message size in bytes
VARIANTS: dict[str, tuple[int, int]] = {
    "small": (_OVERHEAD, 1024),  # C copies these as relaxed atomic words
    "mixed": (_OVERHEAD, 8192),  # about half above 1024 bytes: the memcpy path too
    "large": (16 * 1024, 64 * 1024),  # memcpy path only
    "word512": (512, 512),  # atomic-word path, fixed size
}
WORD_COPY_MAX = 1024  # csrc/ring.c: larger payloads are copied with memcpy

_body_crcs: dict[tuple[str, int], int] = {}


def shape(seq: int, variant: str) -> tuple[int, int]:
    """(total size, body offset in the pool) of message *seq*."""
    lo, hi = VARIANTS[variant]
    h = ((seq % _PERIOD) * 2654435761 + 12345) & 0xFFFFFFFF
    if variant == "mixed":  # alternate between the two copy paths
        lo, hi = (lo, WORD_COPY_MAX) if h & 1 else (WORD_COPY_MAX + 1, hi)
    size = lo + (h >> 3) % (hi - lo + 1)
    offset = (h >> 5) % (_POOL_LEN - hi)
    return size, offset


def _body(seq: int, variant: str) -> bytes:
    size, offset = shape(seq, variant)
    return _POOL[offset : offset + size - _OVERHEAD]


def make_payload(seq: int, variant: str) -> bytes:
    size, _ = shape(seq, variant)
    body = _body(seq, variant)
    key = (variant, seq % _PERIOD)
    body_crc = _body_crcs.get(key)
    if body_crc is None:
        body_crc = _body_crcs[key] = zlib.crc32(body)
    header = _HEADER.pack(seq, size)
    return b"".join((header, body, zlib.crc32(header, body_crc).to_bytes(4, "little")))


def check(data: bytes, seq: int, variant: str) -> str | None:
    """None if *data* is exactly message *seq*, else why not (a short reason)."""
    if len(data) < _OVERHEAD:
        return "short"
    embedded_seq, size = _HEADER.unpack_from(data)
    if size != len(data):
        return "length"
    view = memoryview(data)
    crc = zlib.crc32(view[: _HEADER.size], zlib.crc32(view[_HEADER.size : -4]))
    if crc != int.from_bytes(data[-4:], "little"):
        return "checksum"
    if embedded_seq != seq:
        return "seq"
    if size != shape(seq, variant)[0] or data[_HEADER.size : -4] != _body(seq, variant):
        return "content"
    return None


def loan_back_to_front(pub: Publisher, seq: int, variant: str) -> int:
    """Publishes message *seq* through a loan, built straight in the slot and back to front.

    The second way to write a message (loan/commit instead of publish()), and the one that tears
    an unvalidated read most often: no staging copy, so the writer is inside the slot most of the
    time, and tail first, so a write that begins while the reader (which copies front to back) is
    still in the front half is certain to tear its copy.
    """
    size, offset = shape(seq, variant)
    blen = size - _OVERHEAD
    header = _HEADER.pack(seq, size)
    key = (variant, seq % _PERIOD)
    body_crc = _body_crcs.get(key)
    if body_crc is None:
        body_crc = _body_crcs[key] = zlib.crc32(_POOL_VIEW[offset : offset + blen])
    half = _HEADER.size + blen // 2
    mid = offset + blen // 2
    loan = pub.loan(size)
    with loan as buf:
        buf[size - 4 :] = zlib.crc32(header, body_crc).to_bytes(4, "little")
        buf[half : size - 4] = _POOL_VIEW[mid : offset + blen]
        buf[_HEADER.size : half] = _POOL_VIEW[offset:mid]
        buf[: _HEADER.size] = header
    assert loan.seq == seq
    return seq
