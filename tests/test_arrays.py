"""numpy arrays as messages (publish_array, Message.array), the zero-copy view (Subscriber.view,
view_array) and receive_into with numpy destinations.

Round trips go through a subscriber in a spawned process, read both ways (a private copy with
msg.array(), and in place with view_array()); the rest runs in one process, where overwriting a
message under an open view is deterministic.
"""

from __future__ import annotations

import multiprocessing
import struct
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

import numpy as np
import pytest
from helpers import Children, get_result, time_limit

import shmpubsub as sps
from shmpubsub import arrays

# -- the arrays that travel ------------------------------------------------------------------------


def _cases() -> dict[str, np.ndarray[Any, Any]]:
    """Every dtype and layout a round trip must preserve (deterministic: no randomness)."""
    base = np.arange(4 * 5 * 6, dtype=np.float64).reshape(4, 5, 6)
    structured = np.zeros(3, dtype=np.dtype([("a", "u1"), ("b", "<f8", (2,)), ("c", "S3")], align=True))
    structured["a"], structured["b"], structured["c"] = [1, 2, 3], [[1.5, 2.5]] * 3, [b"x", b"yy", b"zzz"]
    return {
        "uint8": np.arange(200, dtype=np.uint8),
        "int16": (np.arange(-50, 50, dtype=np.int16) * 300).reshape(10, 10),
        "float32 3-d": base.astype(np.float32) / 7,
        "float64 0-d": np.array(3.25),
        "float64 nan inf": np.array([np.nan, np.inf, -np.inf, -0.0, 1e-300]),
        "complex128": (base + 1j * base[::-1]).astype(np.complex128),
        "bool": np.arange(17) % 3 == 0,
        "big-endian >i4": np.arange(-5, 20, dtype=">i4").reshape(5, 5),
        "datetime64[ns]": np.array(["2024-02-29T12:00:00.123456789", "1970-01-01", "NaT"], dtype="M8[ns]"),
        "timedelta64[us]": np.arange(6, dtype="m8[us]"),
        "float16": np.linspace(-2, 2, 9, dtype=np.float16),
        "unicode": np.array(["\u03b1\u03b2", "beta", ""], dtype="<U4"),
        "bytes": np.array([b"ab", b"", b"xyz"], dtype="S3"),
        "structured": structured,
        "zero-size 2-d": np.zeros((0, 3)),
        "zero-size 3-d int": np.zeros((4, 0, 2), dtype=np.int32),
        "non-contiguous slice": base[::2, 1::2, ::3],
        "transposed": base.T,
        "fortran-ordered": np.asfortranarray(base[:, :, 0].astype(np.int64)),
        "negative strides": base[::-1, :, ::-1].astype(np.uint16),
        "numpy scalar": np.float32(1.5),  # type: ignore[dict-item]
    }


def _same(got: np.ndarray[Any, Any], want: Any) -> None:
    want = np.asarray(want)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes()  # bitwise: NaN, NaT, -0.0 and padding included


# -- across processes ----------------------------------------------------------------------------


def _described(arr: np.ndarray[Any, Any]) -> tuple[np.dtype[Any], tuple[int, ...], bytes]:
    # Not the array itself: pickle (below protocol 5) turns a big-endian array native.
    return arr.dtype, arr.shape, arr.tobytes()


def _receive_arrays(topic: str, how: str, count: int, results: Any) -> None:
    """Child: receives *count* array messages and sends back what it got (and whether it was a
    read-only view over the message)."""
    try:
        with sps.Subscriber(topic) as sub:
            results.put("ready")
            for _ in range(count):
                if how == "copy":
                    msg = sub.receive(timeout=10)
                    arr = msg.array()
                    shares = np.shares_memory(arr, np.frombuffer(msg.data, np.uint8)) if arr.nbytes else True
                    results.put(("ok", _described(arr), arr.flags.writeable, shares, arr.ctypes.data % 16))
                else:
                    with sub.view_array(timeout=10) as arr:
                        results.put(("ok", _described(arr), arr.flags.writeable, True, arr.ctypes.data % 16))
    except BaseException:
        results.put(("error", traceback.format_exc()))


@pytest.mark.parametrize("how", ["copy", "view"])
def test_round_trip_across_processes(topic: str, how: str) -> None:
    cases = _cases()
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    with sps.Publisher(topic, slots=32, slot_size=8192) as pub, Children() as children:
        proc = children.start(ctx, _receive_arrays, topic, how, len(cases), results)
        assert get_result(results, 60, "the subscriber") == "ready"
        for arr in cases.values():
            pub.publish_array(arr)
        for name, want in cases.items():
            _, got, writeable, shares, misalignment = get_result(results, 30, f"the subscriber ({name})")
            want = np.asarray(want)
            assert got == _described(want), name
            assert not writeable, name
            assert shares, name  # msg.array() is a view over msg.data, not a copy
            assert misalignment == 0 or want.nbytes == 0, name
        children.join(proc, 30)


def _view_hammered(topic: str, results: Any) -> None:
    """Child: reads every message in place while the publisher races it, checking each one
    that passed validation (message n is 8192 copies of n as uint64)."""
    try:
        received = overwritten = torn = 0
        with sps.Subscriber(topic) as sub:
            results.put("ready")
            while True:
                try:
                    with sub.view(timeout=30) as view:
                        words = np.frombuffer(view.data, np.uint64)
                        intact = bool((words == view.seq).all())
                        del words
                except sps.MessageOverwritten:
                    overwritten += 1
                    continue
                except sps.PublisherGone:
                    break
                received += 1
                torn += not intact  # validated, yet not message `seq`: the protocol failed
            results.put(("ok", received, sub.lost, overwritten, torn))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def test_view_under_a_racing_publisher(topic: str) -> None:
    """A publisher overwriting a 2-slot ring as fast as it can, a subscriber in another process
    viewing in place: nothing that passed validation is torn, and every message is received or
    counted lost."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    message = np.zeros(8192, dtype=np.uint64)
    with Children() as children:
        with sps.Publisher(topic, slots=2, slot_size=message.nbytes) as pub:
            proc = children.start(ctx, _view_hammered, topic, results)
            assert get_result(results, 60, "the subscriber") == "ready"
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                message[:] = pub.published
                pub.publish(message)
            published = pub.published
        _, received, lost, overwritten, torn = get_result(results, 60, "the subscriber")
        children.join(proc, 30)
    print(f"\npublished {published}: received {received}, lost {lost} ({overwritten} overwritten in a view)")
    assert torn == 0
    assert received + lost == published
    assert received > 0


# -- publishing ------------------------------------------------------------------------------------


def test_array_message_layout(topic: str) -> None:
    """Header, then data at a multiple of 64; message_size says how big; is_array tells them apart."""
    arr = np.arange(12, dtype="<f4").reshape(3, 4)
    size = arrays.message_size((3, 4), np.float32)
    with sps.Publisher(topic, slots=4, slot_size=size) as pub, sps.Subscriber(topic) as sub:
        pub.publish_array(arr)  # fits exactly
        pub.publish(b"plain")
        msg = sub.receive(timeout=1)
        assert len(msg) == size == 64 + 48
        assert msg.data.startswith(arrays.MAGIC)
        assert msg.data[64:] == arr.tobytes()
        assert arrays.is_array(msg.data)
        assert not arrays.is_array(sub.receive(timeout=1).data)
        assert not arrays.is_array(b"")


def test_received_array_is_a_read_only_view_of_the_message(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=4096) as pub, sps.Subscriber(topic) as sub:
        pub.publish_array(np.arange(100, dtype=np.int64))
        msg = sub.receive(timeout=1)
        arr = msg.array()
        assert np.shares_memory(arr, np.frombuffer(msg.data, np.uint8))
        assert not arr.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 1
        assert arr.flags.aligned and arr.ctypes.data % 16 == 0


def test_publish_array_too_large(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=1024) as pub, sps.Subscriber(topic) as sub:
        too_big = np.zeros(1024 - 64 + 1, dtype=np.uint8)  # data fits, header and data do not
        with pytest.raises(sps.MessageTooLarge, match="header") as e:
            pub.publish_array(too_big)
        assert isinstance(e.value, ValueError)
        assert pub.published == 0
        pub.publish_array(too_big[:-1])  # nothing left open: the next publish works
        _same(sub.receive(timeout=1).array(), too_big[:-1])


@pytest.mark.parametrize(
    "bad",
    [
        np.array([1, "two", None], dtype=object),
        np.zeros(2, dtype=[("a", "i4"), ("b", object)]),
        np.array(["variable width"], dtype=np.dtypes.StringDType()),
        np.zeros((1,) * 33),
        np.zeros(2, dtype={"names": ["a", "b"], "formats": ["<i4", "<i4"], "offsets": [4, 0]}),
    ],
    ids=["object", "structured with object field", "StringDType", "33 dimensions", "out-of-order fields"],
)
def test_arrays_that_cannot_travel(topic: str, bad: np.ndarray[Any, Any]) -> None:
    with sps.Publisher(topic, slots=4, slot_size=4096) as pub:
        with pytest.raises(sps.InvalidArgument):
            pub.publish_array(bad)
        assert pub.published == 0
        pub.publish(b"still fine")


def test_publish_array_needs_an_array(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=4096) as pub:
        with pytest.raises(sps.InvalidType):
            pub.publish_array([1, 2, 3])  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            pub.publish_array(b"bytes")  # type: ignore[arg-type]


def test_loan_released_after_publish_array(topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy view over the loan is gone before the loan ends: the loan's memoryview is
    released, not left exported into the slot."""
    lent: list[memoryview] = []
    enter = sps.Loan.__enter__

    def recording_enter(loan: sps.Loan) -> memoryview:
        lent.append(enter(loan))
        return lent[-1]

    monkeypatch.setattr(sps.Loan, "__enter__", recording_enter)
    with sps.Publisher(topic, slots=4, slot_size=4096) as pub:
        pub.publish_array(np.ones((8, 8)))
        pub.publish_array(np.ones((8, 8), dtype=[("a", "u1"), ("b", "<f8")]).T)
    assert len(lent) == 2
    for view in lent:
        with pytest.raises(ValueError, match="released"):
            view.tobytes()


# -- receiving what is not an array ----------------------------------------------------------------


def _corrupt(data: bytes, offset: int, fmt: str, value: Any) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_not_an_array(topic: str) -> None:
    good = arrays.header_for(np.dtype("<f8"), (2,)) + np.arange(2.0).tobytes()
    bad = {
        "plain": b"hello world, this is no array message",
        "empty": b"",
        "truncated": good[:-1],
        "longer": good + b"\0",
        "version 2": _corrupt(good, 4, "B", 2),
        "ndim 40": _corrupt(good, 5, "B", 40),
        "unknown dtype encoding": _corrupt(good, 6, "B", 7),
        "bad descr": good.replace(b"<f8", b"<z8"),
        "object descr": good.replace(b"<f8", b"|O8"),
        "shape/length mismatch": _corrupt(good, 24, "<q", 3),
        "negative shape": _corrupt(good, 24, "<q", -2),
    }
    with sps.Publisher(topic, slots=16, slot_size=256) as pub, sps.Subscriber(topic) as sub:
        pub.publish(good)
        _same(sub.receive(timeout=1).array(), np.arange(2.0))
        for data in bad.values():
            pub.publish(data)
        for name in bad:
            msg = sub.receive(timeout=1)
            with pytest.raises(sps.NotAnArray) as e:
                msg.array()
            assert isinstance(e.value, ValueError), name


# -- numpy missing -----------------------------------------------------------------------------------


def test_array_calls_without_numpy(topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    arr = np.arange(4)
    with sps.Publisher(topic, slots=4, slot_size=4096) as pub, sps.Subscriber(topic) as sub:
        pub.publish_array(arr)
        pub.publish_array(arr)
        msg = sub.receive(timeout=1)
        monkeypatch.setitem(sys.modules, "numpy", None)  # `import numpy` now fails
        with pytest.raises(sps.MissingDependency, match="numpy") as e:
            pub.publish_array(arr)
        assert isinstance(e.value, ModuleNotFoundError) and e.value.name == "numpy"
        with pytest.raises(sps.MissingDependency, match="numpy"):
            msg.array()
        with pytest.raises(sps.MissingDependency, match="numpy"), sub.view(timeout=1) as view:
            view.array()
        assert sub.next_seq == 2  # the viewed message was consumed all the same
        pub.publish(b"bytes need no numpy")
        assert sub.receive(timeout=1).data == b"bytes need no numpy"


_WITHOUT_NUMPY = """
import sys
sys.modules["numpy"] = None  # as if it were not installed
import shmpubsub as sps
with sps.Publisher(sys.argv[1], slots=4, slot_size=64) as pub, sps.Subscriber(sys.argv[1]) as sub:
    pub.publish(b"hi")
    with sub.view(timeout=1) as view:
        assert bytes(view.data) == b"hi"
    try:
        pub.publish_array(None)
    except sps.MissingDependency as e:
        print("MissingDependency:", e)
"""


def test_package_works_without_numpy(topic: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_NUMPY, topic], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "MissingDependency: this call needs numpy" in out.stdout


# -- the zero-copy view --------------------------------------------------------------------------------


def test_view_reads_in_place(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=4096) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"first")
        pub.publish(bytes(range(256)) * 16)
        with sub.view(timeout=1) as view:
            assert view.seq == 0 and len(view) == 5 and "seq=0 len=5" in repr(view)
            assert view.data == b"first" and view.data.readonly
            with pytest.raises(TypeError):
                view.data[0] = 1
        with pytest.raises(ValueError, match="released"):
            view.data.tobytes()  # released on exit
        assert "released" in repr(view)
        assert sub.next_seq == 1 and sub.last_seq == 0  # consumed
        with sub.view() as view:
            assert view.seq == 1 and view.data == bytes(range(256)) * 16
        assert sub.try_receive() is None
        pub.publish(b"next")
        assert sub.receive(timeout=1).data == b"next"
        assert sub.lost == 0


def test_view_array(topic: str) -> None:
    frame = np.arange(480 * 64 * 3, dtype=np.uint8).reshape(480, 64, 3)
    size = arrays.message_size(frame.shape, frame.dtype)
    with sps.Publisher(topic, slots=4, slot_size=size) as pub, sps.Subscriber(topic) as sub:
        pub.publish_array(frame)
        pub.publish(b"not an array")
        with sub.view_array(timeout=1) as arr:
            _same(arr, frame)
            assert not arr.flags.writeable
            with pytest.raises(ValueError, match="read-only"):
                arr[0, 0, 0] = 1
        assert sub.next_seq == 1
        with pytest.raises(sps.NotAnArray), sub.view_array(timeout=1):
            pass
        assert sub.next_seq == 2  # consumed, like a received message


def test_view_detects_a_lapping_publisher(topic: str) -> None:
    """Open a view, let the publisher lap the ring, leave: MessageOverwritten, the message counts
    as lost and the stream goes on from the oldest intact message."""
    with sps.Publisher(topic, slots=4, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"m0")
        with pytest.raises(sps.MessageOverwritten) as e, sub.view(timeout=1) as view:
            assert view.data == b"m0"
            for i in range(1, 5):  # m4 reuses m0's slot
                pub.publish(b"m%d" % i)
        assert isinstance(e.value, RuntimeError)
        assert e.value.seq == 0 and "discard" in str(e.value)
        assert sub.lost == 1
        got = [sub.receive(timeout=1).data for _ in range(4)]
        assert got == [b"m1", b"m2", b"m3", b"m4"]
        assert sub.lost + 4 == pub.published


def test_view_detects_a_slot_being_rewritten(topic: str) -> None:
    """A one-slot ring: the publisher opening a loan on the viewed slot is enough."""
    with sps.Publisher(topic, slots=1, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"old")
        with pytest.raises(sps.MessageOverwritten), sub.view(timeout=1):
            loan = pub.loan(3)
            buf = loan.__enter__()
            buf[:] = b"new"
        loan.__exit__(None, None, None)
        assert sub.lost == 1
        assert sub.receive(timeout=1).data == b"new"


def test_exception_inside_a_view_is_not_masked(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        for i in range(6):
            pub.publish(b"m%d" % i)
        with pytest.raises(KeyError), sub.view(timeout=1):
            raise KeyError("user code failed")
        assert sub.next_seq == 3 and sub.lost == 2  # consumed (the ring held m2..m5)
        with pytest.raises(KeyError) as e, sub.view(timeout=1):
            for i in range(6, 12):
                pub.publish(b"m%d" % i)  # overwritten too: the user's error still wins
            raise KeyError("user code failed")
        if sys.version_info >= (3, 11):  # with a note saying the message was overwritten
            assert "message 3" in e.value.__notes__[0]
        assert sub.lost == 2 + 5  # m3..m7: the ring holds m8..m11 now
        assert sub.receive(timeout=1).data == b"m8"


def test_view_waits_like_receive(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=64) as pub, sps.Subscriber(topic, spin_us=0) as sub:
        started = time.monotonic()
        with pytest.raises(sps.ReceiveTimeout), sub.view(timeout=0.05):
            pass
        assert time.monotonic() - started >= 0.05
        with pytest.raises(sps.ReceiveTimeout), sub.view(timeout=0):
            pass
        with pytest.raises(sps.InvalidArgument):
            sub.view(timeout=-1)
        timer = threading.Timer(0.05, pub.publish, [b"late"])
        timer.start()
        try:
            with time_limit(10), sub.view(timeout=5) as view:  # sleeps, woken by the publish
                assert view.data == b"late"
        finally:
            timer.join()
        assert sub.next_seq == 1


def test_view_after_the_publisher_closed(topic: str) -> None:
    pub = sps.Publisher(topic, slots=4, slot_size=64)
    with sps.Subscriber(topic) as sub:
        pub.publish(b"last words")
        pub.close()
        with sub.view(timeout=1) as view:  # what is left comes first
            assert view.data == b"last words"
        with pytest.raises(sps.PublisherGone) as e, sub.view(timeout=1):
            pass
        assert e.value.reason == "closed"


def test_view_misuse(topic: str) -> None:
    with sps.Publisher(topic, slots=8, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        for i in range(4):
            pub.publish(b"m%d" % i)
        with sub.view() as view, pytest.raises(sps.LoanError, match="already open"), sub.view():
            pass
        assert view.seq == 0 and sub.next_seq == 1
        with pytest.raises(sps.LoanError, match="took messages"), sub.view():
            sub.try_receive()
        assert sub.next_seq == 2  # the view's message was taken by try_receive
        with sub.view() as view:
            sub.latest()  # does not move the stream: allowed
        assert view.seq == 2


def test_view_of_a_closed_subscriber(topic: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=64) as pub:
        sub = sps.Subscriber(topic)
        pub.publish(b"m0")
        pub.publish(b"m1")
        with sub.view() as view:
            sub.close()  # inside the block: leaving it raises nothing
            assert view.data == b"m0"  # the mapping stays valid while the view lives
        with pytest.raises(sps.ClosedError), sub.view():
            pass


def test_array_outliving_its_view(topic: str) -> None:
    """An array taken from a view keeps the mapping alive (never a dangling pointer), and
    leaving the block and closing the subscriber still work."""
    with sps.Publisher(topic, slots=4, slot_size=4096) as pub:
        sub = sps.Subscriber(topic)
        pub.publish_array(np.arange(10))
        with sub.view() as view:
            kept = view.array()
        sub.close()
        _same(kept, np.arange(10))  # same bytes: nothing overwrote the slot


# -- receive_into numpy --------------------------------------------------------------------------------


def test_receive_into_numpy_arrays(topic: str) -> None:
    with sps.Publisher(topic, slots=8, slot_size=4096) as pub, sps.Subscriber(topic) as sub:
        data = np.arange(100, dtype=np.float32)
        pub.publish(data.tobytes())
        dst = np.zeros(256, dtype=np.float32)
        n = sub.receive_into(dst)
        assert n == 400  # bytes, not items
        assert n is not None and np.array_equal(dst[: n // dst.itemsize], data)
        assert sub.last_seq == 0

        pub.publish_array(np.eye(3))
        raw = np.empty(4096, dtype=np.uint8)
        n = sub.receive_into(raw)
        assert n is not None
        _same(arrays.decode(raw[:n]), np.eye(3))  # an array message decoded from the buffer

        pub.publish(bytes(64))
        with pytest.raises(sps.MessageTooLarge):
            sub.receive_into(np.zeros(3, dtype=np.float64))  # 24 bytes: too small, stays unread
        with pytest.raises(sps.InvalidArgument):
            sub.receive_into(np.zeros((16, 16), dtype=np.uint8)[:, ::2])  # not contiguous
        with pytest.raises(sps.InvalidArgument):
            sub.receive_into(np.zeros((16, 16), dtype=np.uint8, order="F"))  # not C-contiguous
        readonly = np.zeros(64, dtype=np.uint8)
        readonly.flags.writeable = False
        with pytest.raises(ValueError):
            sub.receive_into(readonly)
        assert sub.receive_into(np.zeros((8, 8), dtype=np.uint8)) == 64
        assert sub.try_receive() is None
