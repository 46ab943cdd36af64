"""Messages over 4 KiB, copied once straight from the slot: exact, and never returned when
overwritten during the copy.
"""

from __future__ import annotations

import pytest
from helpers import (
    BATCH_BYTES,
    SCRATCH_COPY_MAX,
    blob,
    check_batch_shape,
    drain,
    flat,
    hooked_reader,
    time_limit,
)

import shmpubsub as sps

# -- large messages: one copy straight from the slot ------------------------------------------------

LARGE = [SCRATCH_COPY_MAX - 1, SCRATCH_COPY_MAX, SCRATCH_COPY_MAX + 1, 5000, BATCH_BYTES, BATCH_BYTES + 1]
LARGE += [1 << 20]


@pytest.mark.parametrize("size", LARGE)
@pytest.mark.parametrize(
    "how", ["try_receive", "receive", "try_receive_many", "receive_many", "receive_into", "latest"]
)
def test_large_messages_arrive_exactly(topic: str, size: int, how: str) -> None:
    with sps.Publisher(topic, slots=4, slot_size=1 << 20) as pub, sps.Subscriber(topic) as sub:
        sent = [blob(i, size - i) for i in range(3)]  # sizes differ, so stale bytes would show
        short = blob(99, 10)
        pub.publish_many([sent[0], short, sent[1]])
        pub.publish(sent[2])
        expected = [(0, sent[0]), (1, short), (2, sent[1]), (3, sent[2])]
        got: list[tuple[int, bytes]] = []
        buf = bytearray(size + 5)
        for _ in range(4):
            if how == "latest":
                msg = sub.latest()
                assert msg is not None and (msg.seq, msg.data) == (3, sent[2])
                got.append((msg.seq, msg.data))
                assert sub.try_receive() is not None  # move on
                continue
            if how in ("try_receive", "receive"):
                msg = sub.try_receive() if how == "try_receive" else sub.receive(timeout=1)
                assert msg is not None and type(msg.data) is bytes
                got.append((msg.seq, msg.data))
            elif how == "receive_into":
                n = sub.receive_into(buf)
                assert n is not None
                got.append((sub.last_seq, bytes(buf[:n])))
            else:
                batch = sub.try_receive_many() if how == "try_receive_many" else sub.receive_many(timeout=1)
                check_batch_shape(batch)
                got.extend(flat([batch]))
            if len(got) == 4:
                break
        if how != "latest":
            assert got == expected
        assert sub.try_receive() is None and sub.lost == 0


@pytest.mark.parametrize(
    ("size", "how"),
    [(5000, "try_receive"), (5000, "receive")]  # batches copy messages up to 64 KiB in C
    + [(BATCH_BYTES + 1, how) for how in ["try_receive", "receive", "try_receive_many", "receive_many"]],
)
@pytest.mark.parametrize("overwrite", [1, 2, 5])
def test_large_message_overwritten_during_its_copy_is_never_returned(
    topic: str, size: int, how: str, overwrite: int
) -> None:
    """The publisher overwrites the message between locating it and copying it (forced): the torn
    copy is thrown away, the loss counted exactly, and the next intact message returned."""
    slots = 2
    with sps.Publisher(topic, slots=slots, slot_size=BATCH_BYTES + 1) as pub, sps.Subscriber(topic) as sub:
        sent = {i: blob(i, size - i) for i in range(2 + overwrite)}
        pub.publish(sent[0])
        pub.publish(sent[1])

        def overwrite_now() -> None:
            for i in range(2, 2 + overwrite):
                pub.publish(sent[i])

        hooked_reader(sub, overwrite_now)
        with time_limit(5):
            if how == "try_receive":
                msg = sub.try_receive()
            elif how == "receive":
                msg = sub.receive(timeout=1)
            else:
                batch = sub.try_receive_many() if how == "try_receive_many" else sub.receive_many(timeout=1)
                assert len(batch) == 1
                msg = batch.messages()[0]
        assert msg is not None
        published = 2 + overwrite
        first_kept = published - slots  # the oldest message the ring still holds
        assert (msg.seq, msg.data) == (first_kept, sent[first_kept])
        assert sub.lost == first_kept
        rest = [(m.seq, m.data) for m in drain(sub)]
        assert rest == [(i, sent[i]) for i in range(first_kept + 1, published)]
        assert 1 + len(rest) + sub.lost == published
