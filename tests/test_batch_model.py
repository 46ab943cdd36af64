"""Batches against a model ring: random interleavings of publish_many, skips, loans and batch and
single reads (hypothesis).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import (
    BATCH_BYTES,
    LAPPED,
    MAX_BATCH,
    START,
    ModelReader,
    ModelRing,
    abort_loan,
    as_uint8,
    blob,
    check_batch_shape,
    unique_topic,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import shmpubsub as sps

# -- model-based -----------------------------------------------------------------------------------

SKIPPED: Any = object()  # what the model holds in a slot that Publisher.skip marked


class BatchModelRing(ModelRing):
    """test_ring's model ring, plus skip markers and batches."""

    def skip(self, count: int) -> None:
        end = self.write_seq + count
        for n in range(max(self.write_seq, end - self.slots), end):
            self.held[n % self.slots] = (n, SKIPPED)
        self.write_seq = end

    def find(self, r: ModelReader) -> tuple[int, bytes] | None:
        while True:
            held_n, data = self.held.get(r.next % self.slots, (-1, None))
            if held_n == r.next and data is SKIPPED:
                r.lost += 1
                r.next += 1
                continue
            if held_n <= r.next:
                return super().find(r)  # not lapped: the base model decides
            self.resync(r, held_n)  # lapped: one step, then look again (there may be markers)

    def take_many(self, r: ModelReader, max_messages: int) -> tuple[int, list[bytes]]:
        found = self.find(r)
        if found is None:
            return r.next, []
        first, data = found
        out = [data]
        r.last_seq, r.next = first, first + 1
        if len(data) > BATCH_BYTES:
            return first, out  # comes alone
        used = len(data)
        while len(out) < min(max_messages, MAX_BATCH):
            held_n, data = self.held.get(r.next % self.slots, (-1, None))
            if held_n != r.next or data is None or data is SKIPPED or used + len(data) > BATCH_BYTES:
                break
            out.append(data)
            used += len(data)
            r.last_seq, r.next = r.next, r.next + 1
        return first, out


# sizes around the copy paths' limits, and halves and thirds of a batch's 64 KiB
SIZE = st.one_of(
    st.integers(0, 64),
    st.sampled_from([4095, 4096, 4097, 16_384, 21_845, 21_846, 32_767, 32_768, 32_769]),
    st.sampled_from([BATCH_BYTES - 1, BATCH_BYTES, BATCH_BYTES + 1, 70_000]),
)


class BatchMachine(RuleBasedStateMachine):
    """Random interleavings of publish_many / skip / loans / batch and single reads, checked
    against the model ring."""

    def __init__(self) -> None:
        super().__init__()
        self.pub: sps.Publisher | None = None
        self.subs: list[tuple[sps.Subscriber, ModelReader]] = []
        self.model = BatchModelRing(1, 0)
        self.sent: dict[int, bytes] = {}
        self.tag = 0

    @initialize(
        slots=st.sampled_from([1, 2, 4, 8, 16]),
        slot_size=st.sampled_from([0, 64, 4096, 5000, 40_000, 70_000, 70_000, 70_000]),
        readers=st.lists(st.tuples(START, LAPPED), min_size=1, max_size=3),
    )
    def setup(self, slots: int, slot_size: int, readers: list[tuple[str, str]]) -> None:
        self.topic = unique_topic("test-batch")
        self.pub = sps.Publisher(self.topic, slots=slots, slot_size=slot_size)
        self.model = BatchModelRing(slots, slot_size)
        for start, lapped in readers:
            self._attach(start, lapped)

    def _attach(self, start: str, lapped: str) -> None:
        sub = sps.Subscriber(self.topic, start=start, lapped=lapped, spin_us=0)
        self.subs.append((sub, ModelReader(lapped, self.model.start(start))))

    def _data(self, size: int) -> bytes:
        self.tag += 1
        return blob(self.tag, min(size, self.model.slot_size))

    @rule(start=START, lapped=LAPPED)
    @precondition(lambda self: len(self.subs) < 5)
    def attach(self, start: str, lapped: str) -> None:
        self._attach(start, lapped)

    @rule(sizes=st.lists(SIZE, max_size=8), kind=st.sampled_from(["list", "tuple", "gen", "mixed"]))
    def publish_many(self, sizes: list[int], kind: str) -> None:
        assert self.pub is not None
        batch = [self._data(size) for size in sizes]
        if kind == "list":
            first = self.pub.publish_many(batch)
        elif kind == "tuple":
            first = self.pub.publish_many(tuple(batch))
        elif kind == "gen":
            first = self.pub.publish_many(iter(batch))
        else:
            first = self.pub.publish_many(
                [[bytearray, memoryview, as_uint8][i % 3](d) for i, d in enumerate(batch)]
            )
        assert first == self.model.write_seq
        for data in batch:
            self.sent[self.model.publish(data)] = data

    @rule(size=SIZE, count=st.integers(0, 9))
    def publish_records(self, size: int, count: int) -> None:
        assert self.pub is not None
        size = max(1, min(size, self.model.slot_size))
        if self.model.slot_size == 0:
            return
        records = [self._data(size) for _ in range(count)]
        assert self.pub.publish_many(np.frombuffer(b"".join(records), np.uint8), size=size) == (
            self.model.write_seq
        )
        for data in records:
            self.sent[self.model.publish(data)] = data

    @rule(sizes=st.lists(SIZE, min_size=1, max_size=5), where=st.integers(0, 4))
    def publish_many_too_large(self, sizes: list[int], where: int) -> None:
        assert self.pub is not None
        batch = [self._data(size) for size in sizes]
        batch.insert(where % (len(batch) + 1), bytes(self.model.slot_size + 1))
        with pytest.raises(sps.MessageTooLarge):
            self.pub.publish_many(batch)

    @rule(data=st.binary(max_size=8))
    def publish(self, data: bytes) -> None:
        assert self.pub is not None
        data = data[: self.model.slot_size]
        assert self.pub.publish(data) == self.model.publish(data)
        self.sent[self.model.write_seq - 1] = data

    @rule(count=st.integers(0, 10))
    def skip(self, count: int) -> None:
        assert self.pub is not None
        self.pub.skip(count)
        self.model.skip(count)

    @rule(size=SIZE)
    def loan_abort(self, size: int) -> None:
        assert self.pub is not None
        size = min(size, self.model.slot_size)
        abort_loan(self.pub, size, b"\xab" * min(size, 16))
        self.model.abort()

    @rule(i=st.integers(0, 4), max_messages=st.sampled_from([1, 2, 3, 256, MAX_BATCH, 10**6]))
    def try_receive_many(self, i: int, max_messages: int) -> None:
        sub, reader = self.subs[i % len(self.subs)]
        seq, payloads = self.model.take_many(reader, max_messages)
        batch = sub.try_receive_many(max_messages)
        assert (batch.seq, batch.payloads) == (seq, payloads)
        if batch:
            check_batch_shape(batch, max_messages)
            assert all(self.sent[s] == p for s, p in zip(batch.seqs, batch, strict=True))

    @rule(i=st.integers(0, 4), max_messages=st.sampled_from([1, 5, 256]))
    def receive_many_now(self, i: int, max_messages: int) -> None:
        sub, reader = self.subs[i % len(self.subs)]
        seq, payloads = self.model.take_many(reader, max_messages)
        if not payloads:
            with pytest.raises(sps.ReceiveTimeout):
                sub.receive_many(max_messages, timeout=0)
            return
        batch = sub.receive_many(max_messages, timeout=0)
        assert (batch.seq, batch.payloads) == (seq, payloads)

    @rule(i=st.integers(0, 4))
    def try_receive(self, i: int) -> None:
        sub, reader = self.subs[i % len(self.subs)]
        expected = self.model.take(reader)
        msg = sub.try_receive()
        assert (None if msg is None else (msg.seq, msg.data)) == expected

    @invariant()
    def counters_agree(self) -> None:
        if self.pub is None:
            return
        assert self.pub.published == self.model.write_seq
        for sub, reader in self.subs:
            assert (sub.next_seq, sub.lost, sub.last_seq) == (reader.next, reader.lost, reader.last_seq)
            assert sub.pending == max(0, self.model.write_seq - reader.next)

    def teardown(self) -> None:
        for sub, _ in self.subs:
            sub.close()
        if self.pub is not None:
            self.pub.close()


BatchMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestBatchModel = BatchMachine.TestCase
