"""What a subscriber receives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import arrays

if TYPE_CHECKING:
    from numpy.typing import NDArray


class Message:
    """One received message: its payload (``data``, bytes) and sequence number (``seq``).

    Attributes:
        data (bytes): The payload.
        seq (int): Its sequence number.
    """

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


class Batch:
    """Messages taken at once by ``receive_many``: consecutive sequence numbers from :attr:`seq`,
    their payloads as bytes. A sequence of payloads: ``len(batch)``, ``batch[i]``, ``for data in
    batch``. A batch never spans a loss: what was lost before it is in the subscriber's ``lost``.

    Attributes:
        payloads (list[bytes]): The messages' payloads.
        seq (int): The first message's sequence number (the next one's, if the batch is empty).
    """

    __slots__ = ("payloads", "seq")

    def __init__(self, payloads: list[bytes], seq: int) -> None:
        self.payloads = payloads
        self.seq = seq  # the first message's sequence number (the next one's, if empty)

    @property
    def seqs(self) -> range:
        """The messages' sequence numbers."""
        return range(self.seq, self.seq + len(self.payloads))

    def messages(self) -> list[Message]:
        """The batch as Message objects (each costs an allocation: iterate payloads where speed counts)."""
        return [Message(data, seq) for seq, data in enumerate(self.payloads, self.seq)]

    def __len__(self) -> int:
        return len(self.payloads)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.payloads)

    def __getitem__(self, index: int) -> bytes:
        return self.payloads[index]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Batch):
            return NotImplemented
        return self.seq == other.seq and self.payloads == other.payloads

    __hash__ = None  # type: ignore[assignment]  # mutable, like the list it holds

    def __repr__(self) -> str:
        if not self.payloads:
            return f"Batch(empty, next seq={self.seq})"
        return f"Batch(seq={self.seq}..{self.seq + len(self.payloads) - 1}, {len(self.payloads)} messages)"
