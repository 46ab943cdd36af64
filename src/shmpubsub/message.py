"""What a subscriber receives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import arrays

if TYPE_CHECKING:
    from numpy.typing import NDArray


class Message:
    """One received message: its payload (``data``, bytes) and sequence number (``seq``)."""

    __slots__ = ("data", "seq")

    def __init__(self, data: bytes, seq: int) -> None:
        self.data = data
        self.seq = seq

    def array(self) -> NDArray[Any]:
        """The numpy array of a message sent with ``publish_array``: same dtype and shape, a
        read-only view over :attr:`data` (no copy; a few microseconds whatever the size).

        Raises NotAnArray if the message is not an array message, MissingDependency without numpy.
        """
        return arrays.decode(self.data)

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
