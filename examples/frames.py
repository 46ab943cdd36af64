"""Camera-like frames fanned out to worker processes, read in place (no copy).

One process publishes 480x640x3 uint8 frames with ``pub.publish_array``; each worker process
reads every frame straight from shared memory (``sub.view()`` and ``view.array()``: no copy)
and computes its mean brightness. A worker that falls a whole ring behind loses frames (counted
in ``sub.lost``), and a frame overwritten while a worker was reading it raises
MessageOverwritten on leaving the block, so the worker discards its result: a torn frame is
never used. When the publisher closes, the workers finish what is left and print a summary.

    python examples/frames.py                       # 120 frames at 120 fps to 3 workers
    python examples/frames.py --frames 30 --workers 2 --fps 60 --copy

``--copy`` makes the workers receive a private copy instead (``sub.receive()`` then
``msg.array()``). The frame's sequence number is its frame counter.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.queues import Queue
from typing import Any

import numpy as np

import shmpubsub as sps
from shmpubsub import arrays

SHAPE = (480, 640, 3)
SLOTS = 8  # frames the ring holds: about 7 MiB of shared memory


def scene() -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The fixed scene every frame shows (identical in every process). Frame k is the scene
    brightened by k % 50, so a worker can check each frame's mean brightness."""
    return np.random.default_rng(7).integers(0, 200, SHAPE, dtype=np.uint8)


def worker(index: int, topic: str, copy: bool, results: Queue[dict[str, Any]]) -> None:
    scene_mean = float(scene().mean())
    received = overwritten = bad = 0
    total = 0.0
    with sps.Subscriber(topic) as sub:
        while True:
            try:
                if copy:
                    msg = sub.receive()
                    seq, brightness = msg.seq, float(msg.array().mean())
                else:
                    with sub.view() as view:  # the frame stays in shared memory
                        seq, brightness = view.seq, float(view.array().mean())
            except sps.MessageOverwritten:
                overwritten += 1  # the publisher lapped us mid-frame: discard the result
                continue
            except sps.PublisherGone:
                break
            received += 1
            total += brightness
            if abs(brightness - scene_mean - seq % 50) > 1e-6:
                bad += 1
        results.put(
            {
                "index": index,
                "received": received,
                "lost": sub.lost,
                "overwritten": overwritten,
                "bad": bad,
                "brightness": total / max(received, 1),
            }
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=120, help="frames to publish (default 120)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--fps", type=float, default=120.0, help="frames per second (default 120)")
    parser.add_argument("--copy", action="store_true", help="workers receive copies instead of views")
    args = parser.parse_args(argv)

    topic = f"frames-{os.getpid()}"
    ctx = mp.get_context("spawn")
    results: Queue[dict[str, Any]] = ctx.Queue()
    base = scene()
    frame = np.empty_like(base)
    slot_size = arrays.message_size(SHAPE, np.uint8)
    with sps.Publisher(topic, slots=SLOTS, slot_size=slot_size) as pub:
        procs = [ctx.Process(target=worker, args=(i, topic, args.copy, results)) for i in range(args.workers)]
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + 30
        while len(pub.subscribers) < args.workers:  # every worker attached: none misses frame 0
            if time.monotonic() > deadline or not all(p.is_alive() for p in procs):
                print("workers did not start", file=sys.stderr)
                break
            time.sleep(0.01)
        began = time.monotonic()
        for k in range(args.frames):
            np.add(base, k % 50, out=frame)
            pub.publish_array(frame)
            time.sleep(max(0.0, began + (k + 1) / args.fps - time.monotonic()))
        elapsed = time.monotonic() - began
    print(f"published {args.frames} frames of {'x'.join(map(str, SHAPE))} uint8 in {elapsed:.2f} s")
    for proc in procs:
        proc.join(30)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    reports = sorted((results.get(timeout=5) for p in procs if p.exitcode == 0), key=lambda r: r["index"])
    for r in reports:
        print(
            f"worker {r['index']}: received {r['received']}, lost {r['lost']} "
            f"({r['overwritten']} overwritten while read), "
            f"mean brightness {r['brightness']:.1f}, bad {r['bad']}"
        )
    return 0 if len(reports) == len(procs) and all(r["bad"] == 0 for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
