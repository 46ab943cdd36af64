"""The compiled extensions, checked and wired together: the only importer of ``_ffi`` and
``_fastpath``.

The calls made once per message (publish one, take one, take a batch, view) go through
``_fastpath``, a CPython-API wrapper over the same functions of ``lib``: a cffi call and the
Python objects built around it cost more than the message (docs/architecture.md, "Two
bindings"). ``_fastpath`` is handed the cffi module's own function pointers here, so the core
is compiled once.
"""

from __future__ import annotations

from typing import Any, Final

from .. import _fastpath as fastpath
from .._ffi import ffi, lib
from ..errors import InvalidArgument, InvalidType

__all__ = [
    "BUSY", "EMPTY", "LAYOUT_VERSION", "WAKE", "Buffer", "address", "as_buffer", "fastpath", "ffi", "lib",
    "pointer_to", "release",
]

#: The layout version this Python package speaks; the extension must agree.
LAYOUT_VERSION: Final = 2

if lib.SPS_LAYOUT_VERSION != LAYOUT_VERSION:  # pragma: no cover - only with a stale build
    raise ImportError(
        f"shmpubsub's compiled core speaks layout version {lib.SPS_LAYOUT_VERSION} but the Python "
        f"package expects {LAYOUT_VERSION}: the extension is stale, reinstall shmpubsub"
    )


def address(cdata: Any) -> int:
    """The address a cffi pointer holds, for ``_fastpath``."""
    return int(ffi.cast("uintptr_t", cdata))


fastpath.bind(
    *(
        address(ffi.addressof(lib, f))
        for f in (
            *("sps_publish_waking", "sps_take", "sps_take_wait", "sps_take_many", "sps_sleep_take"),
            *("sps_view_begin", "sps_view_end"),
        )
    )
)

# A bytes-like object: anything that exports a contiguous buffer (collections.abc.Buffer from 3.12 on).
Buffer = Any

#: Status codes the wrappers branch on.
EMPTY: Final[int] = lib.SPS_EMPTY
BUSY: Final[int] = lib.SPS_BUSY
WAKE: Final[int] = lib.SPS_WAKE


def as_buffer(data: Buffer) -> Any:
    """A C view of any bytes-like object, without copying."""
    try:
        return ffi.from_buffer(data)
    except TypeError:
        raise InvalidType(f"expected a bytes-like object, not {type(data).__name__}") from None
    except (ValueError, BufferError) as e:  # not C-contiguous
        raise InvalidArgument(f"the buffer must be contiguous: {e}") from None


def pointer_to(mapping: Any, writable: bool) -> Any:
    """A C pointer to the start of a mapping; release it with :func:`release` before unmapping."""
    return ffi.from_buffer("unsigned char[]", mapping, require_writable=writable)


def release(pointer: Any) -> None:
    ffi.release(pointer)
