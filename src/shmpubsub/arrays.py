"""numpy arrays as messages: a small header carrying dtype and shape, then the data in C order.

numpy is optional: this module imports it only inside its functions, and they raise
:class:`~shmpubsub.errors.MissingDependency` without it. Use it through
``Publisher.publish_array``, ``Message.array``, ``Subscriber.view`` and ``Subscriber.view_array``.

The payload of an array message (little-endian fields)::

    offset  size
    0       4    magic b"\\x93SPA"
    4       1    format version (1)
    5       1    ndim, 0..32
    6       1    dtype encoding: 0 = numpy's ``dtype.str`` (e.g. "<f8", ">i4", "<M8[ns]", "|S10");
                 1 = a structured dtype as the .npy format describes it (a Python literal)
    7       1    reserved, 0
    8       4    descr length in bytes
    12      4    data offset from the start of the payload
    16      8    data length in bytes (= product of the shape x itemsize)
    24      8*ndim  shape, int64
    ...     descr (ASCII), then zeros up to the data offset
    offset  data, C order; the offset is a multiple of 64

The data offset is a multiple of 64 within the payload. Slot payloads in the ring, and the
``bytes`` of a received message, are 16-byte aligned, so the array is at least 16-byte aligned
(enough for every numpy dtype) whether it is read in place or from a copy.
"""

from __future__ import annotations

import ast
import functools
import math
import struct
from typing import TYPE_CHECKING, Any, Final, Protocol

from .errors import InvalidArgument, InvalidType, MissingDependency, NotAnArray

if TYPE_CHECKING:
    import types

    import numpy as np
    from numpy.typing import DTypeLike, NDArray

MAGIC: Final = b"\x93SPA"
VERSION: Final = 1
MAX_NDIM: Final = 32
#: The data's offset within the payload is a multiple of this.
ALIGNMENT: Final = 64

_FIXED = struct.Struct("<4sBBBxIIQ")
_SHAPES = [struct.Struct(f"<{n}q") for n in range(MAX_NDIM + 1)]
_DESCR_STR: Final = 0
_DESCR_NPY: Final = 1


def _numpy() -> types.ModuleType:
    """numpy, or MissingDependency naming it."""
    try:
        import numpy
    except ImportError:
        raise MissingDependency(
            "this call needs numpy, which is not installed (pip install numpy)", name="numpy"
        ) from None
    return numpy


def is_array(data: Any) -> bool:
    """True if the bytes-like *data* starts like an array message (checks the magic only; no numpy
    needed). Costs a few hundred nanoseconds."""
    view = memoryview(data)
    return view.nbytes >= _FIXED.size and bytes(view.cast("B")[:4]) == MAGIC


def header_for(dtype: DTypeLike, shape: tuple[int, ...]) -> bytes:
    """The header (padded to the data offset) of an array message of *dtype* and *shape*.

    Raises InvalidArgument for dtypes that cannot travel (object dtypes, structured dtypes with
    object fields, numpy's variable-width strings, structured dtypes with overlapping or
    out-of-order fields) and for more than 32 dimensions; MissingDependency without numpy.
    Cached: a repeated (dtype, shape) costs a dictionary look-up.
    """
    return _header(_numpy().dtype(dtype), tuple(int(n) for n in shape))


@functools.lru_cache(maxsize=64)
def _header(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bytes:
    if len(shape) > MAX_NDIM:
        raise InvalidArgument(f"an array message has at most {MAX_NDIM} dimensions, not {len(shape)}")
    if dtype.hasobject:
        raise InvalidArgument(
            f"arrays of dtype {dtype} hold pointers to Python objects, which mean nothing in another "
            "process; convert them to a fixed-size dtype first"
        )
    if dtype.fields is None:
        kind, descr = _DESCR_STR, dtype.str
        if _numpy().dtype(descr) != dtype:  # user-defined and other dtypes numpy cannot name
            raise InvalidArgument(f"dtype {dtype!r} cannot be described for another process")
    else:
        kind = _DESCR_NPY
        try:
            descr = repr(_numpy().lib.format.dtype_to_descr(dtype))
        except ValueError as e:  # overlapping or out-of-order fields
            raise InvalidArgument(f"dtype {dtype!r} cannot be described for another process: {e}") from None
    encoded = descr.encode("ascii")
    end = _FIXED.size + 8 * len(shape) + len(encoded)
    offset = -(-end // ALIGNMENT) * ALIGNMENT
    nbytes = math.prod(shape) * dtype.itemsize
    fixed = _FIXED.pack(MAGIC, VERSION, len(shape), kind, len(encoded), offset, nbytes)
    return b"".join((fixed, _SHAPES[len(shape)].pack(*shape), encoded, bytes(offset - end)))


def message_size(shape: tuple[int, ...], dtype: DTypeLike) -> int:
    """Bytes an array message of *shape* and *dtype* takes (header and data): the smallest
    ``slot_size`` that carries it. Raises as :func:`header_for`."""
    itemsize: int = _numpy().dtype(dtype).itemsize
    return len(header_for(dtype, shape)) + math.prod(shape) * itemsize


class ArrayPublisher(Protocol):
    """Anything with ``publish_array``: a :class:`shmpubsub.Publisher`."""

    def publish_array(self, array: NDArray[Any]) -> int: ...


def publish(pub: ArrayPublisher, array: NDArray[Any]) -> int:
    """Publishes *array* on *pub*: the same as ``pub.publish_array(array)``
    (:meth:`shmpubsub.Publisher.publish_array`)."""
    return pub.publish_array(array)


def prepare(array: NDArray[Any]) -> tuple[bytes, NDArray[Any]]:
    """(the message header, the array) for publishing *array* (a numpy scalar becomes a 0-d
    array): the message is the header, then ``array.nbytes`` bytes of data (see :func:`fill`).
    Raises InvalidType for a non-array, and as :func:`header_for`."""
    numpy = _numpy()
    if not isinstance(array, numpy.ndarray):
        if not isinstance(array, numpy.generic):
            raise InvalidType(f"expected a numpy array, not {type(array).__name__}")
        array = numpy.asarray(array)
    return _header(array.dtype, array.shape), array


def fill(buf: memoryview, head: bytes, array: NDArray[Any]) -> None:
    """Writes the header, then the data in C order (one pass, whatever the source's strides),
    into *buf* (``len(head) + array.nbytes`` bytes). The numpy view over *buf* is a temporary:
    it is gone when this returns, so *buf* can be released."""
    numpy = _numpy()
    buf[: len(head)] = head
    if array.nbytes == 0:
        return
    dtype, source = array.dtype, array
    if dtype.fields is not None:
        # numpy copies structured items field by field, leaving padding bytes unwritten (the
        # slot's old bytes would leak into them): copy them as opaque items instead.
        dtype = numpy.dtype((numpy.void, dtype.itemsize))
        source = array.view(dtype)
    numpy.frombuffer(buf, dtype, array.size, len(head)).reshape(array.shape)[...] = source


def decode(data: Any) -> NDArray[Any]:
    """The array an array message carries, as a view over *data* (no copy; read-only if *data* is,
    as ``bytes`` and the subscriber's views are).

    Raises NotAnArray if *data* has no valid array header, MissingDependency without numpy.
    Costs a few microseconds, whatever the size.
    """
    numpy = _numpy()
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")  # offsets below count bytes
    dtype, shape, offset = _parse(view)
    if dtype.itemsize == 0 or 0 in shape:  # no bytes to map (numpy refuses an empty buffer)
        empty: NDArray[Any] = numpy.empty(shape, dtype)
        empty.flags.writeable = False
        return empty
    # frombuffer, not ndarray(buffer=...): its array holds a buffer export, so a mapping under
    # it cannot be unmapped while it lives; ndarray(buffer=...) holds none.
    return numpy.frombuffer(view, dtype, math.prod(shape), offset).reshape(shape)  # type: ignore[no-any-return]


def _parse(view: memoryview) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """Validates the array header at the start of *view* (bytes): (dtype, shape, data offset)."""
    size = view.nbytes
    magic, version, ndim, kind, descr_len, offset, nbytes = (
        _FIXED.unpack_from(view) if size >= _FIXED.size else (b"",) + (0,) * 6
    )
    if magic != MAGIC:
        raise NotAnArray(f"not an array message (no array header in its {size} bytes)")
    if version != VERSION:
        raise NotAnArray(f"array header of format version {version}; this shmpubsub reads version {VERSION}")
    end = _FIXED.size + 8 * ndim + descr_len
    if ndim > MAX_NDIM or end > offset or offset + nbytes != size:
        raise NotAnArray(f"corrupt array header (ndim {ndim}, data at {offset}+{nbytes} in {size} bytes)")
    shape: tuple[int, ...] = _SHAPES[ndim].unpack_from(view, _FIXED.size)
    descr = view[_FIXED.size + 8 * ndim : end].tobytes()
    try:
        dtype = _dtype(kind, descr)
    except Exception as e:  # whatever a corrupt descr makes numpy or the literal parser raise
        raise NotAnArray(f"corrupt array header: unusable dtype {descr!r} ({e})") from None
    if dtype.hasobject or min(shape, default=0) < 0 or math.prod(shape) * dtype.itemsize != nbytes:
        raise NotAnArray(f"corrupt array header: {nbytes} bytes cannot hold {dtype} {shape}")
    return dtype, shape, offset


@functools.lru_cache(maxsize=64)
def _dtype(kind: int, descr: bytes) -> np.dtype[Any]:
    numpy = _numpy()
    if kind == _DESCR_STR:
        return numpy.dtype(descr.decode("ascii"))  # type: ignore[no-any-return]
    if kind == _DESCR_NPY:
        return numpy.lib.format.descr_to_dtype(ast.literal_eval(descr.decode("ascii")))  # type: ignore[no-any-return]
    raise ValueError(f"unknown dtype encoding {kind}")
