"""A latest-value state board: readers look only at the newest state, at their own pace.

One process publishes the current state (a small dict, as JSON) at a fixed rate. Each reader
process wakes up at its own pace and looks at the newest state with ``sub.latest()``: it never
works through a backlog, and a slow reader costs the publisher nothing. When the publisher
closes, each reader prints the final state, which is the last one published.

    python examples/state_board.py                          # 2 s at 50 Hz, 3 readers
    python examples/state_board.py --seconds 1 --rate 100 --readers 2

Needs no numpy.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time

import shmpubsub as sps


def reader(index: int, topic: str, period: float) -> None:
    looks = 0
    with sps.Subscriber(topic) as sub:
        while sub.end_reason is None:
            msg = sub.latest()  # the newest state; does not queue anything up
            if msg is not None:
                looks += 1
                state = json.loads(msg.data)
                print(
                    f"reader {index}: tick {state['tick']:4d}  temperature {state['temperature']:6.2f}  "
                    f"status {state['status']}",
                    flush=True,
                )
            time.sleep(period)
        final = sub.latest()  # the ring is still mapped: the last state outlives the publisher
        tick = json.loads(final.data)["tick"] if final is not None else None
        print(
            f"reader {index}: publisher {sub.end_reason} after {looks} looks; final tick {tick}", flush=True
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="how long to publish (default 2)")
    parser.add_argument("--rate", type=float, default=50.0, help="states per second (default 50)")
    parser.add_argument("--readers", type=int, default=3, help="reader processes (default 3)")
    args = parser.parse_args(argv)

    topic = f"state-board-{os.getpid()}"
    ctx = mp.get_context("spawn")
    with sps.Publisher(topic, slots=4, slot_size=1024) as pub:
        # Reader i looks every 50 ms x (i + 1): each at its own pace.
        procs = [ctx.Process(target=reader, args=(i, topic, 0.05 * (i + 1))) for i in range(args.readers)]
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + 30
        while len(pub.subscribers) < args.readers and time.monotonic() < deadline:
            time.sleep(0.01)
        count = max(1, round(args.seconds * args.rate))
        began = time.monotonic()
        for tick in range(count):
            state = {
                "tick": tick,
                "time": time.time(),
                "temperature": 20 + 5 * math.sin(tick / 10),
                "status": "ok" if tick % 40 < 35 else "warming",
            }
            pub.publish(json.dumps(state).encode())
            time.sleep(max(0.0, began + (tick + 1) / args.rate - time.monotonic()))
        print(f"board: published {count} states (last tick {count - 1})", flush=True)
    for proc in procs:
        proc.join(30)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    return 0 if all(proc.exitcode == 0 for proc in procs) else 1


if __name__ == "__main__":
    sys.exit(main())
