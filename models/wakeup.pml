/*
 * The sleep / wake protocol (csrc/control.c, csrc/ring.c, waiting.py, wakeup.py): one
 * publisher, two subscribers that block with no time-out, M messages, then close.
 *
 * A subscriber (waiting.Waiter.wait): spin, which may see a message or give up; drain its
 * socket if it was woken; arm (set its sleepers bit); re-check write_seq and closed; only then
 * sleep until its socket is readable; then read. A successful read disarms. The publisher
 * (sps_publish, Waker.wake_sleepers): store write_seq, load the bitmap; if a bit is set,
 * exchange the bitmap with 0 and send one datagram, non-blocking, to each collected socket
 * (a full queue means a wake-up is already pending). Close stores `closed` and wakes the same way.
 * The ring itself is abstracted to write_seq (models/seqlock.pml checks it).
 *
 * The publisher may stop after any message and stay idle for ever (or close at the end). Checked
 * (spin -a, every interleaving):
 *   - no lost wake-up: whenever no process can move any more, every subscriber has read every
 *     message; so no subscriber sleeps for ever while a message is pending for it, whenever the
 *     publisher falls silent;
 *   - after close, every subscriber ends (reads everything, then sees end of stream);
 *   - a subscriber never reads a message that was not published.
 *
 * write_seq, closed and the bitmap are seq_cst in C (store, load, fetch_or, exchange); spin's
 * memory is sequentially consistent, so the model checks exactly the property the C code relies
 * on: in the single total order of seq_cst operations, either the subscriber's fetch_or comes
 * before the publisher's load of the bitmap (which then sees the bit), or the publisher's store
 * of write_seq comes before the subscriber's re-check (which then sees the message).
 *
 * Variants (spin -D...): NO_RECHECK (arm, then sleep without looking again) and
 * LOAD_BEFORE_STORE (the publisher looks at the bitmap before storing write_seq): spin finds
 * a subscriber asleep for ever with a message pending.
 */
#ifndef M
#define M 3
#endif
#define READERS 2

byte write_seq;
bool closed;
byte sleepers;                  /* bit i: subscriber i asked for a wake-up */
chan sock[READERS] = [1] of { bit };   /* a datagram socket; one pending wake-up suffices */
byte next[READERS];
bool finished[READERS];

/* Waker.wake_sleepers: collect (atomic exchange with 0), then one non-blocking send each. */
inline wake_sleepers(got, k)
{
    atomic { got = sleepers; sleepers = 0 };
    k = 0;
    do
    :: k < READERS ->
        if
        :: got & (1 << k) -> atomic { if :: nfull(sock[k]) -> sock[k]!1 :: full(sock[k]) -> skip fi }
        :: else -> skip
        fi;
        k++
    :: else -> break
    od
}

active proctype Publisher()
{
    byte got, k, n;
    do
    :: true -> goto idle                    /* falls silent for ever, here */
    :: n < M ->
#ifdef LOAD_BEFORE_STORE
        got = sleepers;
        write_seq = n + 1;
        if :: got != 0 -> wake_sleepers(got, k) :: else -> skip fi;
#else
        write_seq = n + 1;                  /* seq_cst store */
        if :: sleepers != 0 -> wake_sleepers(got, k) :: else -> skip fi;  /* seq_cst load */
#endif
        n++
    :: else -> break
    od;
    closed = true;                          /* seq_cst store, after the last write_seq */
    if :: sleepers != 0 -> wake_sleepers(got, k) :: else -> skip fi;
idle:
    skip
}

/* take(): read the next message if there is one; a successful read disarms. */
inline take(i, armed, got_one)
{
    got_one = false;
    atomic {
        if
        :: write_seq > next[i] ->
            next[i]++;
            got_one = true;
            assert(next[i] <= write_seq)
        :: else -> skip
        fi
    };
    if
    :: got_one && armed -> sleepers = sleepers & ~(1 << i); armed = false  /* report_progress */
    :: else -> skip
    fi
}

proctype Subscriber(byte i)
{
    bool woken, armed, got_one, ready;
    do
    :: true ->
        /* spin (sps_spin): sees a message, sees closed, or times out */
        if
        :: write_seq > next[i] -> take(i, armed, got_one); goto again
        :: true -> skip
        fi;
        /* _arm_and_read: drain if woken, arm, re-check */
        if
        :: woken -> do :: nempty(sock[i]) -> sock[i]?_ :: empty(sock[i]) -> break od; woken = false
        :: else -> skip
        fi;
        sleepers = sleepers | (1 << i);     /* sps_arm: seq_cst fetch_or */
        armed = true;
#ifdef NO_RECHECK
        ready = false;
#else
        ready = write_seq > next[i] || closed;  /* seq_cst loads */
#endif
        if
        :: ready ->
            take(i, armed, got_one);
            if
            :: got_one -> goto again
            :: else -> atomic { if :: nfull(sock[i]) -> sock[i]!1 :: full(sock[i]) -> skip fi }  /* wake_self */
            fi
        :: else -> skip
        fi;
        /* _ended: closed, and one more read found nothing: end of stream */
        if
        :: closed ->
            take(i, armed, got_one);
            if
            :: got_one -> goto again
            :: else -> break
            fi
        :: else -> skip
        fi;
        /* _sleep: epoll until the socket is readable (the datagram stays until drained) */
end_asleep:
        nempty(sock[i]);
        woken = true;
        take(i, armed, got_one);
again:
        skip
    od;
    assert(next[i] == M);
    finished[i] = true
}

init
{
    atomic { run Subscriber(0); run Subscriber(1) }
}

/* Fires only when no other process can move: then nobody may be owed a message. */
active proctype Quiescence()
{
    timeout ->
        assert(next[0] == write_seq && next[1] == write_seq);
        assert(!closed || (finished[0] && finished[1]))
}
