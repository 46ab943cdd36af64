"""The per-message calls through the CPython API (src/shmpubsub/_fastpath.c): how they are
called, what they build, that their slow paths hand over to Python intact, and that they leak
neither references nor the objects that own the ring."""

from __future__ import annotations

import errno
import gc
import threading
import time
import tracemalloc

import pytest

import shmpubsub as sps
from shmpubsub._core.lib import BUSY, address
from shmpubsub._core.ring import Reader, Writer
from shmpubsub._core.wake import drain
from shmpubsub._fastpath import RELEASE_GIL_FROM
from shmpubsub.message import Message


def test_publish_takes_one_argument_by_position_or_as_data(topic: str) -> None:
    with sps.Publisher(topic, slots=8, slot_size=16) as pub, sps.Subscriber(topic) as sub:
        assert pub.publish(b"one") == 0
        assert pub.publish(data=b"two") == 1
        wrong = [((), {}), ((b"a", b"b"), {}), ((), {"payload": b"a"}), ((b"a",), {"data": b"b"})]
        for args, kwargs in wrong:
            with pytest.raises(TypeError, match="exactly one argument"):
                pub.publish(*args, **kwargs)
        assert [m.data for m in (sub.try_receive(), sub.try_receive())] == [b"one", b"two"]  # type: ignore[union-attr]
        assert sub.try_receive() is None


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("size", [RELEASE_GIL_FROM - 1, RELEASE_GIL_FROM, RELEASE_GIL_FROM + 4097])
def test_copies_on_either_side_of_the_gil_release_are_byte_exact(topic: str, kind: type, size: int) -> None:
    payload = bytes((i * 7 + 3) % 251 for i in range(size))
    with sps.Publisher(topic, slots=4, slot_size=size) as pub, sps.Subscriber(topic) as sub:
        assert pub.publish(kind(payload)) == 0
        msg = sub.receive(timeout=5)
    assert msg.data == payload and msg.seq == 0


def test_a_large_publish_lets_other_threads_run(topic: str) -> None:
    """Copies of RELEASE_GIL_FROM bytes or more release the GIL, as a cffi call would: a thread
    that wakes every 0.1 ms keeps counting during one publish of 64 MiB. (Were the GIL held,
    it could count at most once: when the call returns and the interpreter hands it over.)"""
    size = 64 << 20
    counted = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal counted
        while not stop.is_set():
            counted += 1
            time.sleep(0.0001)

    payload = bytes(size)
    with sps.Publisher(topic, slots=2, slot_size=size) as pub:
        counter = threading.Thread(target=count)
        counter.start()
        try:
            time.sleep(0.01)
            before = counted
            pub.publish(payload)
            during = counted - before
        finally:
            stop.set()
            counter.join()
    assert during >= 5, f"the other thread ran {during} times during the copy"


def test_messages_built_in_c_are_whole_messages(topic: str) -> None:
    with sps.Publisher(topic, slots=8, slot_size=64) as pub, sps.Subscriber(topic, spin_us=1000) as sub:
        pub.publish(b"first")
        pub.publish(b"second")
        taken = sub.try_receive()
        waited = sub.receive(timeout=5)
    for msg, data, seq in [(taken, b"first", 0), (waited, b"second", 1)]:
        assert type(msg) is sps.Message
        assert type(msg.data) is bytes and msg.data == data
        assert type(msg.seq) is int and msg.seq == seq
        assert msg == sps.Message(data, seq) and hash(msg) == hash(sps.Message(data, seq))
        assert f"seq={seq}" in repr(msg)
        with pytest.raises(AttributeError):
            msg.extra = 1  # type: ignore[attr-defined]  # __slots__ kept: no __dict__ sneaked in


def test_the_c_calls_refuse_bad_arguments(topic: str) -> None:
    with sps.Publisher(topic, slots=8, slot_size=64), sps.Subscriber(topic) as sub:
        reader = sub._reader
        with pytest.raises(OverflowError):
            reader.read_wait(-1)
        with pytest.raises(TypeError):
            reader.read_wait("10")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            reader.read_wait()  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            reader.read(0)  # type: ignore[call-arg]
        assert reader.read_wait(0) is None
        with pytest.raises(ValueError, match="at least 1"):
            reader.read_many(0)
        assert len(reader.read_many(10**9)) == 0  # at most MAX_BATCH: never past the ends array
        with pytest.raises(TypeError):
            reader.view(0)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            reader.view_end(True)  # type: ignore[call-arg]


def test_take_is_built_only_with_what_its_mode_needs(topic: str) -> None:
    from shmpubsub import _fastpath

    with sps.Publisher(topic, slots=8, slot_size=64), sps.Subscriber(topic) as sub:
        reader = sub._reader
        owner, where, slow = reader._r, address(reader._r), reader._view_slow
        mapping = memoryview(b"x")
        with pytest.raises(TypeError, match="memoryview"):
            _fastpath.Take(owner, where, None, slow, "view")
        with pytest.raises(TypeError, match="memoryview"):
            _fastpath.Take(owner, where, None, slow, "view", b"not a memoryview")
        with pytest.raises(TypeError, match="memoryview"):
            _fastpath.Take(owner, where, Message, slow, "read", mapping)
        with pytest.raises(TypeError, match="None as result_type"):
            _fastpath.Take(owner, where, Message, slow, "view", mapping)
        with pytest.raises(TypeError, match="a type as result_type"):
            _fastpath.Take(owner, where, None, slow, "read")
        with pytest.raises(ValueError, match="unknown mode"):
            _fastpath.Take(owner, where, None, slow, "peek")


def test_views_located_in_c_are_slices_of_the_mapping(topic: str) -> None:
    with sps.Publisher(topic, slots=8, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        reader = sub._reader
        assert reader.view() is None  # the slow path: nothing there
        pub.publish(b"first")
        pub.publish(b"second")
        data, seq = reader.view()  # type: ignore[misc]
        assert (bytes(data), seq) == (b"first", 0) and data.readonly
        assert data.obj is sub._mapping_view.obj  # shares the mapping's buffer, keeping it alive
        assert reader.view_end() is True and sub.next_seq == 1
        data, seq = reader.view()  # type: ignore[misc]
        assert sub.try_receive() is not None  # a read inside the view takes its message
        assert reader.view_end() is None and (bytes(data), seq) == (b"second", 1)
        with pytest.raises(sps.ClosedError):
            reader.view_end()  # no view open: refused, as after close


def test_sleep_read_wakes_on_a_publish_times_out_and_refuses_bad_time_outs(topic: str) -> None:
    with sps.Publisher(topic, slots=8, slot_size=64) as pub, sps.Subscriber(topic, spin_us=0) as sub:
        reader = sub._reader
        assert not reader.arm()
        later = threading.Timer(0.05, pub.publish, (b"late",))
        later.start()
        started = time.monotonic()
        msg = reader.sleep_read(-1)  # no time-out: the publish from the other thread wakes it
        later.join()
        assert msg is not None and msg.data == b"late" and msg.seq == 0
        assert time.monotonic() - started >= 0.04
        assert reader.woke == (True, False)
        assert drain(sub._waiter._wake.sock.fileno()) == 1  # type: ignore[union-attr]
        assert not reader.arm()
        started = time.monotonic()
        assert reader.sleep_read(30) is None
        assert time.monotonic() - started >= 0.025
        assert reader.woke == (False, False)
        for bad, error in ((-2, ValueError), (2**31, ValueError), ("1", TypeError), (1.5, TypeError)):
            with pytest.raises(error):
                reader.sleep_read(bad)  # type: ignore[arg-type]


def test_sleep_read_without_descriptors_to_watch_says_so(topic: str) -> None:
    with sps.Publisher(topic, slots=8, slot_size=64), sps.Subscriber(topic) as sub:
        reader = sub._reader
        reader.watch(-1, -1)
        assert reader.sleep_read(0) is None
        with pytest.raises(OSError, match="cannot sleep") as raised:
            reader.woke  # noqa: B018
        assert raised.value.errno == errno.EBADF


def test_batches_built_in_c_are_whole_batches(topic: str) -> None:
    sizes = [0, 1, 7, 64, 0, 33]
    with sps.Publisher(topic, slots=64, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"skip me")
        assert sub.try_receive() is not None
        pub.publish_many([bytes([n]) * n for n in sizes])
        batch = sub.try_receive_many(4)
        rest = sub.try_receive_many()
    assert type(batch) is sps.Batch and type(batch.payloads) is list
    assert batch.seq == 1 and batch.payloads == [bytes([n]) * n for n in sizes[:4]]
    assert rest.seq == 5 and rest.payloads == [bytes([n]) * n for n in sizes[4:]]
    assert all(type(p) is bytes for p in batch.payloads + rest.payloads)


def test_no_references_leak_on_any_path(topic: str) -> None:
    """Every path through the C calls, taken many times over: memory stays flat. A missing
    Py_DECREF of a message's bytes, its number, a status code or a Py_buffer shows up here."""
    payload = bytes(48)

    def rounds(pub: sps.Publisher, sub: sps.Subscriber, n: int) -> None:
        for _ in range(n):
            pub.publish(payload)
            pub.publish(bytearray(payload))  # through a Py_buffer
            assert sub.try_receive() is not None  # taken in C, GIL held
            assert sub.receive(timeout=1) is not None  # through read_wait
            assert sub.try_receive() is None  # the slow path: nothing there
            pub.publish_many([payload] * 3)
            assert len(sub.receive_many(timeout=1)) == 3  # a batch built in C
            assert not sub.try_receive_many()  # its slow path
            with pytest.raises(sps.MessageTooLarge):  # a refusal
                pub.publish(bytes(65))
            with pytest.raises(sps.InvalidType):  # not a buffer
                pub.publish("text")
            assert not reader.arm()
            pub.publish(payload)  # wakes us from C: a datagram to our own socket
            assert reader.sleep_read(1000) is not None  # epoll, then the take, in one call
            assert reader.woke == (True, False)
            drain(wake_fd)
            assert not reader.arm()
            assert reader.sleep_read(0) is None  # its slow path: nothing there
            pub.publish(payload)
            with sub.view() as view:  # located and sliced in C, validated in C
                assert view.data == payload
            assert reader.view() is None  # view()'s slow path: nothing there
            pub.publish(payload)
            with pytest.raises(sps.LoanError), sub.view():  # view_end's slow path: moved
                assert sub.try_receive() is not None
            pub.publish(payload)
            with pytest.raises(sps.MessageOverwritten), sub.view():  # and overwritten
                pub.publish_many([payload] * 64)
            assert sub.try_receive() is not None  # the newest: where the reader resumed

    with (
        sps.Publisher(topic, slots=64, slot_size=64) as pub,
        sps.Subscriber(topic, spin_us=100, lapped="latest") as sub,
    ):
        reader, wake_fd = sub._reader, sub._waiter._wake.sock.fileno()  # type: ignore[union-attr]
        rounds(pub, sub, 2000)  # warm: caches, interned objects, the exception machinery
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            rounds(pub, sub, 20000)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert grown < 64 << 10, f"{grown} bytes more after 20000 rounds"


def test_closed_ends_are_collected(topic: str) -> None:
    """The C callables refer back to their writer and reader (slow paths): that cycle is
    collected, so nothing keeps a closed topic's objects alive."""

    def alive() -> int:
        gc.collect()
        return sum(type(o) in (Writer, Reader) for o in gc.get_objects())

    already = alive()
    with sps.Publisher(topic, slots=8, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"x")
        assert sub.try_receive() is not None
        assert alive() == already + 2
    del pub, sub
    assert alive() == already


def test_closed_ends_refuse_through_the_c_calls(topic: str) -> None:
    pub = sps.Publisher(topic, slots=8, slot_size=64)
    sub = sps.Subscriber(topic)
    publish, read, read_wait = pub.publish, sub._reader.read, sub._reader.read_wait
    view, view_end = sub._reader.view, sub._reader.view_end
    sub.close()
    pub.close()
    with pytest.raises(sps.ClosedError):
        publish(b"late")
    with pytest.raises(sps.ClosedError):
        read()
    with pytest.raises(sps.ClosedError):
        read_wait(1000)
    with pytest.raises(sps.ClosedError):
        view()
    with pytest.raises(sps.ClosedError):
        view_end()


def test_a_view_located_the_slow_way_after_a_close_is_refused(topic: str) -> None:
    """view()'s slow path (a writer too fast to locate from) slices the mapping in Python: a
    close in another thread between locating and slicing gives ClosedError, as in C."""
    with sps.Publisher(topic, slots=8, slot_size=64) as pub, sps.Subscriber(topic) as sub:
        pub.publish(b"x")
        sub._mapping_view.release()  # type: ignore[union-attr]  # what close() does meanwhile
        with pytest.raises(sps.ClosedError):
            sub._reader._view_slow(BUSY)
