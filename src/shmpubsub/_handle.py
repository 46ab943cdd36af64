"""What every object holding operating-system resources shares."""

from __future__ import annotations

import warnings
from types import TracebackType
from typing import TypeVar

_H = TypeVar("_H", bound="Handle")


class Handle:
    """A context manager with an idempotent :meth:`close`, a :attr:`closed` property, and a
    ResourceWarning (then a close) if it is collected while still open."""

    _closed = True  # subclasses set it False once fully built

    def close(self) -> None:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self, stacklevel=2)
            self.close()
