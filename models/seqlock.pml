/*
 * The ring's publish / read / lap protocol (csrc/ring.c): one writer, one reader, a ring of
 * N slots, M messages, so the reader can be lapped several times.
 *
 * Checked (spin -a, every interleaving of the two processes):
 *   - a message is returned only if its copy is whole: both payload words and the length
 *     belong to the message the reader asked for (no torn read is ever returned);
 *   - the reader never moves backwards, and counts every message it skips in `lost`;
 *   - when the writer is done and the reader has drained the ring:
 *     received + lost == M, and the reader is at M.
 *
 * Each statement carries the memory order the C code uses. Spin explores interleavings of
 * a sequentially consistent memory: this proves the protocol's logic (the comparisons, the
 * re-check, the resync arithmetic) for every interleaving, not that the C fences are strong
 * enough on weaker hardware; that rests on Boehm's seqlock argument (the release fence after
 * the odd sequence, the acquire fence before the re-load) and on the ThreadSanitizer stress.
 *
 * Variants (spin -D...): NO_RECHECK drops the second load of the sequence word, and spin
 * finds a torn read; RESYNC_LATEST checks the other resync mode.
 */
#ifndef N
#define N 2
#endif
#ifndef M
#define M 5
#endif

/* Slot i: seq word, length and a payload of two words (copied one at a time). */
int seq[N];
int length[N];
int word0[N];
int word1[N];
int write_seq;
bool writer_done;

active proctype Writer()
{
    int n = 0, slot;
    do
    :: n < M ->
        slot = n % N;
        seq[slot] = 2 * n + 1;      /* relaxed store, then a release fence */
        length[slot] = n;           /* relaxed */
        word0[slot] = n;            /* relaxed atomic word (or memcpy above 1 KiB) */
        word1[slot] = n;
        seq[slot] = 2 * n + 2;      /* release */
        write_seq = n + 1;          /* seq_cst */
        n++
    :: else -> break
    od;
    writer_done = true
}

active proctype Reader()
{
    int next = 0, lost = 0, received = 0;
    int want, slot, s1, s2, got_len, w0, w1;
    int written, lapping, started, target;
    bool done, lapped;
    do
    :: true ->
        done = writer_done;         /* read before looking: if set, nothing more will come */
        want = 2 * next + 2;
        slot = next % N;
        s1 = seq[slot];             /* acquire */
        if
        :: s1 < want ->             /* not published yet */
            if
            :: done -> break
            :: else -> skip
            fi
        :: s1 == want ->
            got_len = length[slot];     /* relaxed; clamped to the slot in C */
            w0 = word0[slot];       /* the copy: relaxed words */
            w1 = word1[slot];
#ifdef NO_RECHECK
            s2 = s1;
#else
            s2 = seq[slot];         /* after an acquire fence; relaxed */
#endif
            if
            :: s2 == s1 ->
                assert(got_len == next && w0 == next && w1 == next);  /* never torn */
                received++;
                next++
            :: else -> s1 = s2; lapped = true
            fi
        :: s1 > want -> lapped = true
        fi;
        if
        :: lapped ->                /* resync(r, s1): the message s1 belongs to lapped us */
            lapped = false;
            written = write_seq;    /* acquire */
            lapping = (s1 - 1) / 2;
            started = (written > lapping + 1 -> written : lapping + 1);
#ifdef RESYNC_LATEST
            target = (written > 0 -> written - 1 : 0);
#else
            target = (started > N -> started - N : 0);  /* the oldest that can be intact; the C
                                                         * core adds N/8 (SPS_LAP_MARGIN): 0 here */
#endif
            target = (target > next + 1 -> target : next + 1);
            assert(target > next);  /* never backwards */
            lost = lost + target - next;
            next = target
        :: else -> skip
        fi
    od;
    assert(next == M && received + lost == M)
}
