"""What a subscriber receives."""

from __future__ import annotations


class Message:
    """One received message: its payload (``data``, bytes) and sequence number (``seq``)."""

    __slots__ = ("data", "seq")

    def __init__(self, data: bytes, seq: int) -> None:
        self.data = data
        self.seq = seq

    def __bytes__(self) -> bytes:
        return self.data

    def __len__(self) -> int:
        return len(self.data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.seq == other.seq and self.data == other.data

    def __hash__(self) -> int:
        return hash((self.seq, self.data))

    def __repr__(self) -> str:
        preview = self.data[:32]
        more = "..." if len(self.data) > 32 else ""
        return f"Message(seq={self.seq}, data={preview!r}{more}, len={len(self.data)})"
