"""shmpubsub side by side with the transports a user would otherwise pick, in one run.

    pip install '.[bench]'
    python benchmarks/compare.py [--quick] [--sizes 64,4K,64K,1M] [--out DIR] [--only KEY,...]

Peers: multiprocessing.Queue, multiprocessing.Pipe, a raw socket.socketpair, pyzmq over ipc://
(PUSH/PULL and PUB/SUB), faster-fifo and iceoryx2. A peer that cannot be imported is reported
as missing (with the pip command), never dropped.

Workloads, each over every message size:

- one-way latency: ping-pong through two channels between two processes, RTT/2, median and
  p99, through each transport's spinning/polling path and its blocking path;
- throughput 1→1: one publisher sends as fast as it can for a time budget; one receiver
  touches every message (``len()`` and its 8-byte sequence number) and checks the last
  payload byte for byte; messages delivered per second, and the ones lost;
- fan-out 1→N (N=4): the same with N receivers, for the transports that broadcast.

Every side runs in its own process, started with multiprocessing 'spawn'; the harness process
only waits. Results go to ``OUT/benchmarks-compare.json``, ``OUT/img/compare-*.png`` and a
section of ``OUT/benchmarks.md`` between ``<!-- compare:begin -->`` and ``<!-- compare:end -->``
(OUT is this checkout's docs/ unless ``--out`` says otherwise).

The modules, by role: ``wire`` (what a message carries), ``transports`` (one adapter per peer),
``roles`` (what each child process does), ``harness`` (runs the rows in child processes and
cleans up after them), ``report`` (the Markdown), ``plots`` (the PNGs), ``cli`` (the arguments).
The spawned children import this package by name: whoever runs it puts benchmarks/ on sys.path
(``python benchmarks/compare.py`` does).
"""
