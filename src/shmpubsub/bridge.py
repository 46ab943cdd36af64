"""Bridges a topic between machines over ZeroMQ (optional: ``pip install 'shmpubsub[bridge]'``).

:class:`BridgeOut` subscribes to a local topic and republishes every message on a ZeroMQ PUB
socket; :class:`BridgeIn` receives them on a SUB socket and republishes them into a local topic
of the same geometry, for ordinary :class:`~shmpubsub.Subscriber` s on the far host.

Each network message has three frames: the topic name, a fixed header (:data:`HEADER`: version,
slots, slot_size, sequence number, messages the outbound bridge lost locally so far, epoch) and
the payload. The inbound side tells what it missed from gaps in the sequence numbers, and which
of those were lost before the network (the outbound bridge was lapped) and which on it (ZeroMQ
dropped them at its high-water mark, or the connection was down).

The local publisher never waits for the bridge: the outbound bridge is an ordinary subscriber,
and the PUB socket drops rather than block. Both bridges go on after the far side restarts
(ZeroMQ reconnects), and the outbound one after the local publisher is re-created.

:class:`SupervisedBridge` runs a bridge in a child process and removes what the child leaves
behind if it is killed (what ``shmpubsub bridge`` does); a bridge run in-process and killed
leaves its objects to the next bridge or ``shmpubsub gc``, as any killed publisher does.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, TypeVar

from . import _proc, admin
from ._handle import Handle
from .errors import (
    ClosedError,
    InvalidArgument,
    InvalidSegment,
    MissingDependency,
    PublisherGone,
    ReceiveTimeout,
    ShmPubSubError,
    TopicExists,
    TopicNotFound,
    one_line,
)
from .names import validate_topic
from .publisher import Publisher
from .subscriber import Subscriber

log = logging.getLogger(__name__)

_R = TypeVar("_R", bound="_Runner")

#: version (u8), 3 pad bytes, slots (u32), slot_size (u32), seq (u64), lost so far (u64), epoch (u64).
HEADER = struct.Struct("<B3xIIQQQ")
VERSION = 1

# How often a blocked run() looks at its stop event, and how often the outbound bridge looks
# for a topic that does not exist (yet, or again).
_POLL = 0.05
_TAKEOVER_WAIT = 1.0
_COPY_THRESHOLD = 64 * 1024  # larger payloads go to ZeroMQ without a copy
# Messages handled in one go before run() looks at its stop events again (a few milliseconds).
_BURST = 1000


class BridgeError(ShmPubSubError, OSError):
    """ZeroMQ refused an address (malformed, in use, unknown host)."""


def _zmq() -> Any:
    try:
        import zmq
    except ImportError:
        raise MissingDependency(
            "the bridge needs pyzmq, which is not installed: pip install 'shmpubsub[bridge]'"
        ) from None
    return zmq


@dataclass(frozen=True)
class Frame:
    """A decoded network message."""

    topic: str
    seq: int
    lost: int
    slots: int
    slot_size: int
    epoch: int
    data: bytes


def encode_header(seq: int, lost: int, slots: int, slot_size: int, epoch: int) -> bytes:
    return HEADER.pack(VERSION, slots, slot_size, seq, lost, epoch)


def decode(parts: list[bytes]) -> Frame:
    """Decodes the frames of one network message; InvalidArgument if they are malformed."""
    if len(parts) != 3 or len(parts[1]) != HEADER.size:
        raise InvalidArgument(f"not a shmpubsub bridge message ({len(parts)} frames)")
    version, slots, slot_size, seq, lost, epoch = HEADER.unpack(parts[1])
    if version != VERSION:
        raise InvalidArgument(f"bridge protocol version {version} is not supported (expected {VERSION})")
    return Frame(parts[0].decode(errors="replace"), seq, lost, slots, slot_size, epoch, parts[2])


class _Runner:
    """What both bridges share: a stop event, run()/close() from any thread, context manager."""

    def __init__(self, topic: str, kind: str, context: Any) -> None:
        zmq = _zmq()
        self.topic = validate_topic(topic)
        self._topic_bytes = self.topic.encode()
        self._stop = threading.Event()
        self._running = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._zmq = zmq
        self._own_context = context is None
        self._context = zmq.Context() if context is None else context
        self._socket = self._context.socket(getattr(zmq, kind))
        self._socket.setsockopt(zmq.LINGER, 0)

    def _close_socket(self) -> None:
        """Closes the socket, and the context if it is ours."""
        self._socket.close(0)
        if self._own_context:
            self._context.term()

    def _step(self, timeout: float) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def run(self, stop_event: threading.Event | None = None, duration: float | None = None) -> None:
        """Forwards messages until *stop_event* is set, :meth:`close` is called (from another
        thread), or *duration* seconds pass.

        A ``multiprocessing.Event`` shared with a process that may be killed is a trap: one
        killed inside ``is_set()`` keeps the event's lock for ever, and every other user blocks
        in its next ``is_set()``. Give such a process an event of its own, or stop bridges in
        other processes as :class:`SupervisedBridge` does (through a pipe)."""
        if not self._running.acquire(blocking=False):
            raise InvalidArgument("this bridge is already running")
        try:
            if self._closed:
                raise ClosedError("the bridge is closed")
            end = None if duration is None else time.monotonic() + duration
            while not self._stop.is_set() and not (stop_event is not None and stop_event.is_set()):
                if end is not None and time.monotonic() >= end:
                    break
                self._step(_POLL)
        finally:
            self._running.release()

    def start(self) -> threading.Thread:
        """Runs the bridge in a daemon thread (stopped by :meth:`close`)."""
        self._thread = threading.Thread(target=self.run, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self._thread

    def close(self) -> None:
        """Stops a run() in progress (waiting for it), then closes the sockets and the local
        subscriber or publisher. Idempotent."""
        if self._closed:
            return
        self._stop.set()
        with self._running:  # a run() in another thread returns within _POLL
            if self._closed:
                return
            self._closed = True
            self._release()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class BridgeOut(_Runner):
    """Republishes local topic *topic* on a ZeroMQ PUB socket bound to *bind*
    (``"tcp://0.0.0.0:5555"``).

    ``hwm``: messages ZeroMQ queues per connected peer before it drops (the local publisher is
    never slowed). ``start``: where the local subscriber begins (see
    :class:`~shmpubsub.Subscriber`). Waits for the topic if it does not exist, and follows it
    when its publisher is re-created. Counters: :attr:`forwarded`, :attr:`lost_local`,
    :attr:`dropped`, :attr:`attached`.

    Killed in this process, it leaves its subscriber entry and wake-up socket until the
    topic's publisher or ``shmpubsub gc`` reclaims them; run it as a :class:`SupervisedBridge`
    to have them removed at once.

    Attributes:
        topic (str): The local topic it reads.
        endpoint (str): The address the PUB socket is bound to, as ZeroMQ reports it (the
            port chosen, for ``tcp://*:0``).
        forwarded (int): Messages handed to ZeroMQ.
        bytes_forwarded (int): Their payloads' bytes.
        dropped (int): Messages refused by ZeroMQ (a PUB socket at its high-water mark drops
            silently, and the far side counts those from the sequence gaps).
        attached (int): Times a local topic was attached.
    """

    def __init__(
        self,
        topic: str,
        bind: str,
        *,
        hwm: int = 1000,
        start: str = "next",
        context: Any = None,
    ) -> None:
        super().__init__(topic, "PUB", context)
        zmq = self._zmq
        self._start = start
        try:
            self._socket.setsockopt(zmq.SNDHWM, hwm)
            try:
                self._socket.bind(bind)
            except zmq.ZMQError as e:
                raise BridgeError(f"cannot bind {bind!r}: {e}") from None
            self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException:
            self._close_socket()
            raise
        self._sub: Subscriber | None = None
        self._header: tuple[int, int, int] = (0, 0, 0)  # slots, slot_size, epoch
        self._dead_epoch: int | None = None
        self._lost_before = 0  # lost_local of the subscribers before the current one
        self._retry_at = 0.0
        self.forwarded = 0
        self.bytes_forwarded = 0
        self.dropped = 0
        self.attached = 0

    @property
    def lost_local(self) -> int:
        """Messages lapped by the local publisher before being forwarded."""
        return self._lost_before + (0 if self._sub is None else self._sub.lost)

    def stats(self) -> dict[str, int]:
        """The counters, by name (what ``--report`` prints)."""
        return {
            "forwarded": self.forwarded,
            "bytes": self.bytes_forwarded,
            "lost_local": self.lost_local,
            "dropped": self.dropped,
            "attached": self.attached,
        }

    def _attach(self) -> Subscriber | None:
        now = time.monotonic()
        if now < self._retry_at:
            return None
        self._retry_at = now + _POLL
        try:
            sub = Subscriber(self.topic, start=self._start, spin_us=0)
        except (TopicNotFound, InvalidSegment):
            return None
        if sub.epoch == self._dead_epoch or (sub.end_reason is not None and sub.pending == 0):
            # The segment of a publisher we already followed to its end (a crashed one stays
            # until it is taken over): wait for the next one.
            self._dead_epoch = sub.epoch
            sub.close()
            return None
        self._sub = sub
        self._header = (sub.slots, sub.slot_size, sub.epoch)
        self.attached += 1
        log.info("bridge out: attached topic %r (epoch %#x)", self.topic, sub.epoch)
        return sub

    def _detach(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            self._lost_before += sub.lost
            self._dead_epoch = sub.epoch
            sub.close()

    def _step(self, timeout: float) -> None:
        sub = self._sub or self._attach()
        if sub is None:
            self._stop.wait(timeout)
            return
        try:
            msg = sub.try_receive()
            if msg is None:
                msg = sub.receive(timeout=timeout)
        except ReceiveTimeout:
            return
        except PublisherGone as gone:
            log.info("bridge out: %s; waiting for a new publisher", gone)
            self._detach()
            return
        send = self._socket.send_multipart
        zmq = self._zmq
        slots, slot_size, epoch = self._header
        for n in range(1, _BURST + 1):  # forward a burst without waiting
            header = HEADER.pack(VERSION, slots, slot_size, msg.seq, self.lost_local, epoch)
            data = msg.data
            try:
                send([self._topic_bytes, header, data], flags=zmq.NOBLOCK, copy=len(data) < _COPY_THRESHOLD)
            except zmq.Again:
                self.dropped += 1
            else:
                self.forwarded += 1
                self.bytes_forwarded += len(data)
            if n == _BURST:
                break  # run() looks at its stop events before the next burst
            msg = sub.try_receive()
            if msg is None:
                break

    def _release(self) -> None:
        self._detach()
        self._close_socket()


class BridgeIn(_Runner):
    """Receives topic *topic* from a :class:`BridgeOut` at *connect* (``"tcp://host:5555"``) and
    republishes it into local topic *local_name* (by default *topic*), created with the remote
    topic's geometry when the first message arrives (``mode``: its permissions).

    Counters: :attr:`received`, :attr:`published`, :attr:`lost_remote`, :attr:`lost_network`,
    :attr:`lost` (both). The losses are passed on with ``Publisher.skip``, so local
    subscribers count them in their own ``lost`` too.

    Killed in this process, it leaves its local topic's segments until the next inbound bridge
    takes the topic over or ``shmpubsub gc`` removes them; run it as a :class:`SupervisedBridge`
    to have them removed at once.

    Attributes:
        topic (str): The remote topic it subscribes to.
        local_name (str): The local topic it publishes.
        publisher (Publisher | None): The local topic's publisher, once the first message
            has created it.
        received (int): Messages received from the network.
        published (int): Messages published into the local topic.
        lost_remote (int): Messages the outbound bridge lost before sending (lapped on its host).
        lost_network (int): Messages sent, or due to be sent, but never received: ZeroMQ
            dropped them, or the link or the outbound bridge was down.
        malformed (int): Messages of this topic that could not be decoded (logged and skipped).
    """

    def __init__(
        self,
        topic: str,
        connect: str,
        *,
        local_name: str | None = None,
        hwm: int = 1000,
        mode: int = 0o600,
        context: Any = None,
    ) -> None:
        self.local_name = validate_topic(local_name if local_name is not None else topic)
        super().__init__(topic, "SUB", context)
        zmq = self._zmq
        self._mode = mode
        try:
            self._socket.setsockopt(zmq.RCVHWM, hwm)
            self._socket.setsockopt(zmq.RECONNECT_IVL, 100)
            self._socket.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            self._socket.setsockopt(zmq.SUBSCRIBE, self._topic_bytes)
            try:
                self._socket.connect(connect)
            except zmq.ZMQError as e:
                raise BridgeError(f"cannot connect to {connect!r}: {e}") from None
        except BaseException:
            self._close_socket()
            raise
        self.publisher: Publisher | None = None
        self._epoch: int | None = None
        self._next_seq = 0  # the remote sequence number expected next
        self._remote_lost = 0  # the last header's lost-so-far
        self.received = 0
        self.published = 0
        self.lost_remote = 0
        self.lost_network = 0
        self.malformed = 0

    @property
    def lost(self) -> int:
        """:attr:`lost_remote` plus :attr:`lost_network`."""
        return self.lost_remote + self.lost_network

    def stats(self) -> dict[str, int]:
        """The counters, by name (what ``--report`` prints)."""
        return {
            "received": self.received,
            "published": self.published,
            "lost_remote": self.lost_remote,
            "lost_network": self.lost_network,
            "malformed": self.malformed,
        }

    def _step(self, timeout: float) -> None:
        zmq = self._zmq
        if not self._socket.poll(int(timeout * 1000), zmq.POLLIN):
            return
        for _ in range(_BURST):  # a burst, then look at the stop events again
            try:
                parts = self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            self._handle(parts)

    def _handle(self, parts: list[bytes]) -> None:
        if parts[0] != self._topic_bytes:  # SUBSCRIBE matches prefixes: "a" also gets "ab"
            return
        try:
            frame = decode(parts)
        except InvalidArgument as e:
            self.malformed += 1
            log.warning("bridge in: %s", e)
            return
        self.received += 1
        pub = self._publisher_for(frame)
        gap = 0
        if self._epoch != frame.epoch:
            # The first message, or the remote publisher was re-created: nothing to compare with.
            self._epoch = frame.epoch
        elif frame.seq >= self._next_seq:
            gap = frame.seq - self._next_seq
            remote = max(0, min(gap, frame.lost - self._remote_lost))
            self.lost_remote += remote
            self.lost_network += gap - remote
        else:  # an older number in the same epoch: the outbound bridge restarted at "oldest"
            log.info("bridge in: sequence went back from %d to %d", self._next_seq, frame.seq)
        self._remote_lost = frame.lost
        self._next_seq = frame.seq + 1
        if gap:  # local subscribers count what was lost upstream in their own `lost`
            pub.skip(gap)
        pub.publish(frame.data)
        self.published += 1

    def _publisher_for(self, frame: Frame) -> Publisher:
        pub = self.publisher
        if pub is not None and (pub.slots, pub.slot_size) == (frame.slots, frame.slot_size):
            return pub
        if pub is not None:
            log.info("bridge in: the remote geometry changed; re-creating topic %r", self.local_name)
            self.publisher = None
            pub.close()
        self.publisher = self._create(frame)
        log.info(
            "bridge in: created topic %r (%d slots of %d bytes)",
            self.local_name,
            frame.slots,
            frame.slot_size,
        )
        return self.publisher

    def _create(self, frame: Frame) -> Publisher:
        # Taking over the topic of a dead publisher (our own predecessor, killed) can meet a
        # subscriber probing that publisher's lock at the same instant, and see TopicExists:
        # only a live owner keeps it that way for long.
        deadline = time.monotonic() + _TAKEOVER_WAIT
        while True:
            try:
                return Publisher(
                    self.local_name, slots=frame.slots, slot_size=frame.slot_size, mode=self._mode
                )
            except TopicExists:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _release(self) -> None:
        try:
            self._close_socket()
        finally:
            pub, self.publisher = self.publisher, None
            if pub is not None:
                pub.close()


class SupervisedBridge(Handle):
    """Runs one bridge in a child process and removes what the child leaves behind if it dies.

    ``SupervisedBridge("in", "prices", "tcp://pubhost:5555", local_name="prices-remote")``
    starts the bridge in a child process (``python -m shmpubsub.bridge``: :func:`_child_main`,
    which is what ``shmpubsub bridge`` runs too) and returns at once. *direction* is ``"out"`` (*address* is
    bound) or ``"in"`` (*address* is connected to); *hwm* and *local_name* are those of
    :class:`BridgeOut` and :class:`BridgeIn`; *report* and *verbose* are the command's
    ``--report`` and ``-v``. The child prints on *stderr* (by default ours).

    - However the child ends, :meth:`wait` (or :meth:`poll`, :meth:`close`) then removes what
      it left (:func:`shmpubsub.admin.clean_up_after`): for ``"in"``, the local topic's
      segments unless a new publisher took them over; for ``"out"``, its subscriber entry and
      wake-up socket. They are listed in :attr:`removed`.
    - The child watches a pipe whose other end only this process holds: when this process
      calls :meth:`stop` or ends in any way (SIGKILL included), the child closes cleanly.
      (A child this process forks without exec shares that end, and delays this until it ends.)

    Only both killed at the same instant leaves objects behind, for the next bridge or
    ``shmpubsub gc``. Raises InvalidArgument for a bad direction, topic or option,
    MissingDependency without pyzmq; an address ZeroMQ refuses makes the child exit with
    status 1.
    """

    def __init__(
        self,
        direction: str,
        topic: str,
        address: str,
        *,
        local_name: str | None = None,
        hwm: int = 1000,
        report: float | None = None,
        verbose: int = 0,
        stderr: int | IO[Any] | None = None,
    ) -> None:
        _zmq()  # fail here, with the hint to install it, rather than in the child
        if direction not in ("out", "in"):
            raise InvalidArgument(f"direction must be 'out' or 'in', not {direction!r}")
        validate_topic(topic)
        if direction == "out" and local_name is not None:
            raise InvalidArgument("local_name is for inbound bridges only")
        #: The local topic the bridge reads (out) or publishes (in).
        self.local_topic = validate_topic(topic if local_name is None else local_name)
        if not isinstance(address, str) or not address:
            raise InvalidArgument(
                f"address must be a ZeroMQ endpoint such as 'tcp://host:5555', not {address!r}"
            )
        if isinstance(hwm, bool) or not isinstance(hwm, int) or hwm < 0:
            raise InvalidArgument(f"hwm must be a whole number >= 0, not {hwm!r}")
        if report is not None and (
            isinstance(report, bool) or not isinstance(report, (int, float)) or not 0 < report < 1e6
        ):
            raise InvalidArgument(f"report must be None or a number of seconds > 0, not {report!r}")
        if isinstance(verbose, bool) or not isinstance(verbose, int) or verbose < 0:
            raise InvalidArgument(f"verbose must be a whole number >= 0, not {verbose!r}")
        watched, held = os.pipe()  # neither end is inherited by anything but the child below
        self._stop_pipe = os.fdopen(held, "wb", buffering=0)
        command = [sys.executable, "-m", "shmpubsub.bridge", *["-v"] * verbose, direction]
        command += [f"--address={address}", f"--hwm={hwm}", f"--supervisor-fd={watched}"]
        if local_name is not None:
            command.append(f"--as={local_name}")
        if report is not None:
            command.append(f"--report={report!r}")
        command += ["--", topic]  # "--": a topic may start with "-"
        try:
            self._process = subprocess.Popen(command, pass_fds=(watched,), stderr=stderr)
        except BaseException:
            self._stop_pipe.close()
            raise
        finally:
            os.close(watched)
        #: The bridge process.
        self.pid = self._process.pid
        # Read while the child is ours and unreaped, so its pid cannot have been reused.
        self._start_time = _proc.start_time(self.pid) or 0
        #: The child's exit status once it ended (negative: killed by that signal), else None.
        self.returncode: int | None = None
        #: What was removed after the child ended (see above).
        self.removed: list[str] = []
        self._closed = False

    def stop(self) -> None:
        """Asks the bridge to stop; it closes cleanly and exits with status 0. Returns at once;
        idempotent, and safe to call from a signal handler."""
        self._stop_pipe.close()

    def poll(self) -> int | None:
        """The child's exit status if it ended (then its leftovers are removed), else None."""
        code = self._process.poll()
        return None if code is None else self._ended(code)

    def wait(self) -> int:
        """Waits for the child to end, removes what it left, and returns its exit status
        (negative: killed by that signal)."""
        return self._ended(self._process.wait())

    def close(self, timeout: float = 10.0) -> None:
        """Stops the bridge and waits for it; one that has not exited after *timeout* seconds
        is killed (and what it leaves removed). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("bridge process %d did not stop within %g s; killing it", self.pid, timeout)
            self._process.kill()
            code = self._process.wait()
        self._ended(code)

    def _ended(self, code: int) -> int:
        if self.returncode is None:
            self.returncode = code
            self.stop()
            try:
                self.removed = admin.clean_up_after(self.pid, self._start_time, [self.local_topic])
            except (ShmPubSubError, OSError) as e:
                log.warning("cannot clean up after bridge process %d (shmpubsub gc will): %s", self.pid, e)
        return code

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"returncode={self.returncode}"
        return f"<shmpubsub.bridge.SupervisedBridge pid={self.pid} {self.local_topic!r} {state}>"


# -- the child process ---------------------------------------------------------------------

#: Each of them makes a bridge (and the command supervising it) stop and close cleanly.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _child_main(argv: list[str] | None = None) -> int:
    """The bridge process that :class:`SupervisedBridge` starts (``python -m shmpubsub.bridge
    [-v] out|in --address ADDR --hwm N --supervisor-fd FD [--as NAME] [--report S] -- TOPIC``;
    its arguments were checked by the supervisor). Runs the bridge until any of STOP_SIGNALS,
    or until its supervisor stops it or dies (end-of-file on FD), printing on stderr what
    ``shmpubsub bridge`` prints. Exit status 0, or 1 on an error (printed on one line)."""
    parser = argparse.ArgumentParser(prog="python -m shmpubsub.bridge")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("direction", choices=("out", "in"))
    parser.add_argument("--address", required=True)
    parser.add_argument("--hwm", type=int, required=True)
    parser.add_argument("--supervisor-fd", type=int, required=True)
    parser.add_argument("--as", dest="local_name")
    parser.add_argument("--report", type=float)
    parser.add_argument("topic")
    args = parser.parse_args(argv)
    level = logging.WARNING if not args.verbose else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(name)s: %(message)s")
    stop = threading.Event()
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: stop.set())
    try:
        _stop_at_end_of_file(args.supervisor_fd, stop)
        link: BridgeOut | BridgeIn
        if args.direction == "out":
            out = BridgeOut(args.topic, args.address, hwm=args.hwm)
            link, where = out, f"topic {args.topic!r} -> {out.endpoint}"
        else:
            link = BridgeIn(args.topic, args.address, local_name=args.local_name, hwm=args.hwm)
            where = f"{args.address} -> topic {link.local_name!r}"
        with link:
            print(f"shmpubsub: bridging {where} (Ctrl-C to stop)", file=sys.stderr, flush=True)
            while not stop.is_set():
                link.run(stop_event=stop, duration=args.report)
                if args.report and not stop.is_set():
                    print(_stats_line(link.stats()), file=sys.stderr, flush=True)
            print(f"shmpubsub: bridge stopped: {_stats_line(link.stats())}", file=sys.stderr)
    except (ShmPubSubError, OSError) as e:
        print(f"shmpubsub: {one_line(e)}", file=sys.stderr)
        return 1
    return 0


def _stop_at_end_of_file(fd: int, stop: threading.Event) -> None:
    """Sets *stop* once *fd*, the read end of a pipe whose write end only the supervisor holds,
    reaches end-of-file: the supervisor closed it, or died."""
    try:
        is_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        is_pipe = False
    if not is_pipe:
        raise InvalidArgument(f"--supervisor-fd {fd}: not an open pipe")

    def watch() -> None:
        with open(fd, "rb", buffering=0) as pipe:
            while pipe.read(1):
                pass  # nothing is ever written: only the end counts
        stop.set()

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def _stats_line(stats: dict[str, int]) -> str:
    return "  ".join(f"{name} {value}" for name, value in stats.items())


if __name__ == "__main__":
    sys.exit(_child_main())
