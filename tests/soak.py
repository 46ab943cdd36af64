"""Crash soak: a publisher and several subscribers in separate processes, one of them killed with
SIGKILL at a random or a chosen moment in every round, restarted, and everything checked.

    python tests/soak.py --rounds 300 --seed 1         (CI runs a few hundred rounds)
    python tests/soak.py --rounds 2000 --seed 7        (a long run)

Each round makes a fresh topic (random slot count and message sizes), starts the subscribers and
a publisher, and then kills, in turn (so five rounds cover every kind), one of:

- pub-random:   the publisher, at a random moment (mostly while publishing in bursts, sometimes
                while it is still creating the topic);
- pub-in-loan:  the publisher, in the middle of a publish: inside a loan, half the message written;
- pub-sleepers: the publisher, while every subscriber sleeps in receive() or view();
- sub-random:   a subscriber, at a random moment;
- sub-asleep:   a subscriber, asleep in receive(), so that the publisher's wake-up finds it dead;

plus, in half of the rounds, a second kill chosen at random. A killed publisher is replaced by a
new one, which takes the topic over; subscribers see PublisherGone("crashed") and re-attach. A
killed subscriber is replaced by a new one. Then the last publisher closes the topic.

After every round it checks, from what each process reported:

- no subscriber was ever handed a corrupt payload (payloads.py: sequence number, length, CRC);
- for every span during which a subscriber stayed attached to one incarnation of the topic,
  ``received + lost == end - first``, where ``first`` is its ``next_seq`` after attaching and
  ``end`` its ``next_seq`` when it saw PublisherGone; ``end`` is exactly what that publisher
  published (its ``write_seq``: for a killed one, read from its segment after the kill), and
  nothing was pending;
- the reason is "closed" for the last publisher and "crashed" for every killed one, and every
  subscriber asleep when its publisher was killed saw PublisherGone within ``--bound`` seconds;
- every subscriber re-attached after a restart, every process finished (no hang), and the round
  left nothing of its own in /dev/shm (its topic's segments) or in the soak's socket directory;
  objects of other programs using shmpubsub meanwhile are not looked at.

It prints the counts and exits 1 on any violation (0 otherwise). Torn reads: a copying read
validates and retries inside the library, which does not count them; zero-copy views (a share of
the reads) are checked by the subscriber itself, and a view whose bytes fail the checksum must be
reported overwritten by the library: those are the torn reads caught that it counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import payloads

import shmpubsub as sps
from shmpubsub import admin
from shmpubsub.names import PREFIX, SHM_DIR
from shmpubsub.wakeup import socket_dir

EVENTS = ("pub-random", "pub-in-loan", "pub-sleepers", "sub-random", "sub-asleep")
# How long a step may take before it counts as a hang (generous: the machine may be loaded).
SETTLE = 15.0
STEP = 10.0
# A subscriber's receive() time-out: only bounds each call; time-outs are normal (a paused publisher).
RECEIVE_TIMEOUT = 0.5
VIEW_SHARE = 0.2  # of the reads, zero-copy views (checked by the subscriber itself)
# Every topic of this soak is named soak-RUN-<round>, so that its leftover check looks at its own
# objects only, never at those of another program using shmpubsub meanwhile. Run from the test
# suite, RUN includes the suite's run marker (tests/helpers.py), which the suite's leak check
# judges by. Its sockets go to a socket directory of its own (main()).
RUN = "-".join(filter(None, (os.environ.get("SHMPUBSUB_TEST_RUN"), f"{os.getpid()}{secrets.token_hex(3)}")))

# Commands to children, one byte each.
PAUSE, GO, LOAN_AND_STALL, CLOSE, STOP = b"p", b"g", b"l", b"c", b"s"


# -- the children --------------------------------------------------------------------------------


class Reporter:
    """A child's side of its report pipe: one JSON object per line, each written whole (short
    lines: a pipe write of at most PIPE_BUF bytes is atomic, even if we are killed just after)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, event: str, **fields: Any) -> None:
        os.write(self.fd, (json.dumps({"event": event, **fields}) + "\n").encode()[: select.PIPE_BUF])


def _command(fd: int, wait: bool) -> bytes:
    """The next command byte, or b"" if none is waiting (and *wait* is false)."""
    if not wait and not select.select([fd], [], [], 0)[0]:
        return b""
    return os.read(fd, 1)


def publisher_main(
    topic: str, rng: random.Random, out: Reporter, commands: int, variant: str, slots: int
) -> int:
    """Publishes self-checking messages in bursts (publish() or a loan), obeying commands between
    bursts, until told to close."""
    pub = sps.Publisher(topic, slots=slots, slot_size=payloads.VARIANTS[variant][1], max_subscribers=16)
    out.send("ready", epoch=pub.epoch)
    seq = 0
    while True:
        command = _command(commands, wait=False)
        if command == PAUSE:
            out.send("paused", seq=seq)
            while _command(commands, wait=True) != GO:
                pass
        elif command == LOAN_AND_STALL:  # killed in the middle of a publish
            message = payloads.make_payload(seq, variant)
            with pub.loan(len(message)) as buf:
                buf[: len(message) // 2] = message[: len(message) // 2]
                out.send("in-loan", seq=seq)
                _command(commands, wait=True)
            raise AssertionError("a publisher stalled in a loan was not killed")
        elif command == CLOSE:
            out.send("closing", epoch=pub.epoch, published=pub.published)
            pub.close()
            return 0
        for _ in range(rng.randint(1, 2 * slots)):
            if rng.random() < 0.25:
                payloads.loan_back_to_front(pub, seq, variant)
            elif pub.publish(payloads.make_payload(seq, variant)) != seq:
                raise AssertionError(f"publish() did not return {seq}")
            seq += 1
        # Mostly short gaps (subscribers keep up or get lapped), sometimes long ones (they sleep).
        time.sleep(rng.uniform(0.01, 0.03) if rng.random() < 0.05 else rng.uniform(0, 0.001))


def _attach(topic: str, rng: random.Random, commands: int, dead: set[int]) -> sps.Subscriber | None:
    """A subscriber on the topic's current incarnation (not one already seen dead), or None when
    told to stop while waiting for one."""
    while _command(commands, wait=False) != STOP:
        try:
            sub = sps.Subscriber(
                topic,
                start=rng.choice(["next", "latest", "oldest"]),
                lapped=rng.choice(["oldest", "latest"]),
                spin_us=rng.choice([0, 50]),
            )
        except (sps.TopicNotFound, sps.InvalidSegment):  # not there yet, or being created or replaced
            time.sleep(0.002)
            continue
        if sub.epoch not in dead:
            return sub
        sub.close()
        time.sleep(0.002)
    return None


def _read_one(
    sub: sps.Subscriber, rng: random.Random, variant: str, span: Counter[str]
) -> tuple[int, str | None]:
    """Takes one message, by copy or in place: (its number, why it is corrupt or None).
    Raises MessageOverwritten for a view overwritten while read (counted here)."""
    if rng.random() >= VIEW_SHARE:
        msg = sub.receive(timeout=RECEIVE_TIMEOUT)
        return msg.seq, payloads.check(msg.data, msg.seq, variant)
    why: str | None = None
    try:
        with sub.view(timeout=RECEIVE_TIMEOUT) as view:
            seq = view.seq
            why = payloads.check(bytes(view.data), seq, variant)
    except sps.MessageOverwritten:
        span["overwritten"] += 1
        span["torn"] += why is not None  # torn, and caught
        raise
    span["views"] += 1
    return seq, why


def subscriber_main(topic: str, rng: random.Random, out: Reporter, commands: int, variant: str) -> int:
    """Reads every incarnation of the topic in turn, checking each message, and reports one span
    per incarnation; ends when the topic is closed (or when told to stop while re-attaching)."""
    dead: set[int] = set()
    slow = rng.random() < 0.5
    while True:
        sub = _attach(topic, rng, commands, dead)
        if sub is None:
            out.send("stopped")
            return 0
        span: Counter[str] = Counter()
        first = last = sub.next_seq
        out.send("attached", epoch=sub.epoch, first=first)
        reason = None
        while reason is None:
            try:
                seq, why = _read_one(sub, rng, variant, span)
            except (sps.ReceiveTimeout, sps.MessageOverwritten):
                continue
            except sps.PublisherGone as gone:
                reason = gone.reason
                out.send(
                    "span",
                    epoch=sub.epoch,
                    reason=reason,
                    at=time.monotonic(),
                    first=first,
                    end=sub.next_seq,
                    lost=sub.lost,
                    pending=sub.pending,
                    **span,
                )
                continue
            if why is not None:
                out.send("corrupt", epoch=sub.epoch, seq=seq, why=why)
            if seq < last:
                out.send("out-of-order", epoch=sub.epoch, seq=seq, after=last)
            last = seq + 1
            span["received"] += 1
            if slow and rng.random() < 0.01:
                time.sleep(rng.uniform(0, 0.003))  # fall behind now and then: get lapped
        sub.close()
        if reason == "closed":
            return 0
        dead.add(sub.epoch)


# -- checking a round ------------------------------------------------------------------------------


@dataclass
class RoundRecord:
    """What a round's processes reported, and what the orchestrator saw and did."""

    reports: list[dict[str, Any]] = field(default_factory=list)  # every report of every child
    final: tuple[int, int] | None = None  # (epoch, published) of the publisher that closed
    killed_epochs: dict[int, int] = field(default_factory=dict)  # epoch -> its write_seq after the kill
    sleeper_kills: list[tuple[int, float, list[int]]] = field(default_factory=list)  # (epoch, when, pids)
    bound: float = 2.0
    leftovers: list[str] = field(default_factory=list)


def check_round(record: RoundRecord) -> list[str]:
    """Every violation of the soak's invariants in one round's record (empty: all good)."""
    problems: list[str] = []
    spans: dict[tuple[int, int], dict[str, Any]] = {}
    for r in record.reports:
        if r["event"] in ("error", "corrupt", "out-of-order", "hang"):
            problems.append(f"{r['event']}: {r}")
        if r["event"] != "span":
            continue
        spans[(r["pid"], r["epoch"])] = r
        delivered = r.get("received", 0) + r["lost"]
        if delivered != r["end"] - r["first"] or r["pending"] != 0:
            problems.append(
                f"accounting: received + lost = {delivered}, end - first = {r['end'] - r['first']}: {r}"
            )
        if record.final is not None and r["epoch"] == record.final[0]:
            expected = ("closed", record.final[1])
        elif r["epoch"] in record.killed_epochs:
            expected = ("crashed", record.killed_epochs[r["epoch"]])
        else:
            problems.append(f"a span of an incarnation nobody published or killed: {r}")
            continue
        if (r["reason"], r["end"]) != expected:
            problems.append(f"expected PublisherGone({expected[0]!r}) after {expected[1]} messages: {r}")
    for epoch, killed_at, pids in record.sleeper_kills:
        for pid in pids:
            span = spans.get((pid, epoch))
            if span is None:
                problems.append(f"subscriber {pid}, asleep when its publisher was killed, never saw it go")
            elif span["at"] - killed_at > record.bound:
                problems.append(
                    f"subscriber {pid} saw its publisher's death after {span['at'] - killed_at:.3f} s "
                    f"(bound {record.bound} s)"
                )
    problems += [f"left behind: {path}" for path in record.leftovers]
    return problems


# -- running a round -------------------------------------------------------------------------------


@dataclass
class Child:
    role: str
    pid: int
    reports: int  # our end of its report pipe (-1 once it is closed)
    commands: int  # our end of its command pipe
    pending: bytes = b""
    events: list[dict[str, Any]] = field(default_factory=list)
    status: int | None = None  # wait status, once reaped
    killed: bool = False

    def last(self, event: str) -> dict[str, Any] | None:
        return next((e for e in reversed(self.events) if e["event"] == event), None)

    def tell(self, command: bytes) -> None:
        try:
            os.write(self.commands, command)
        except BrokenPipeError:
            pass  # it is gone; the checks say whether it should be


def _objects() -> set[str]:
    """This soak's objects: its topics' segments in /dev/shm, and every socket in its own socket
    directory (main() gives it one)."""
    ours = PREFIX + f"soak-{RUN}-"
    shm = {os.path.join(SHM_DIR, name) for name in os.listdir(SHM_DIR) if name.startswith(ours)}
    sockets = socket_dir()
    return shm | {os.path.join(sockets, name) for name in os.listdir(sockets) if name.startswith(PREFIX)}


class Round:
    def __init__(self, number: int, seed: int, subscribers: int, bound: float) -> None:
        self.rng = random.Random(f"{seed}:{number}")
        self.topic = f"soak-{RUN}-{number}"
        self.variant = self.rng.choice(["small", "mixed", "large"])
        self.slots = self.rng.choice([2, 4, 8, 64])
        self.subscribers = subscribers
        self.events = [EVENTS[number % len(EVENTS)]]
        if self.rng.random() < 0.5:
            self.events.append(self.rng.choice(EVENTS))
        self.children: list[Child] = []
        self.publisher: Child | None = None
        self.record = RoundRecord(bound=bound)
        self.kills: Counter[str] = Counter()

    # -- children --

    def _fork(self, role: str, main: Callable[..., int], *args: Any) -> Child:
        reports_r, reports_w = os.pipe()
        commands_r, commands_w = os.pipe()
        seed = self.rng.getrandbits(64)
        pid = os.fork()
        if pid == 0:  # the child: keep only its own two ends
            code = 1
            try:
                for child in self.children:
                    for fd in (child.reports, child.commands):
                        if fd >= 0:
                            os.close(fd)
                os.close(reports_r)
                os.close(commands_w)
                out = Reporter(reports_w)
                try:
                    code = main(self.topic, random.Random(seed), out, commands_r, *args)
                except BaseException:
                    out.send("error", role=role, trace=traceback.format_exc()[-2000:])
            finally:
                os._exit(code)
        os.close(reports_w)
        os.close(commands_r)
        os.set_blocking(reports_r, False)
        child = Child(role, pid, reports_r, commands_w)
        self.children.append(child)
        return child

    def start_publisher(self) -> None:
        self.publisher = self._fork("publisher", publisher_main, self.variant, self.slots)

    def start_subscriber(self) -> None:
        self._fork("subscriber", subscriber_main, self.variant)

    def live_subscribers(self) -> list[Child]:
        return [c for c in self.children if c.role == "subscriber" and c.status is None]

    def kill(self, child: Child) -> float:
        """SIGKILLs *child* and reaps it (unless it is already gone: its pid may be reused);
        returns when it was killed."""
        when = time.monotonic()
        if child.status is not None:
            return when  # it exited by itself: its reports or status say why
        os.kill(child.pid, signal.SIGKILL)
        _, child.status = os.waitpid(child.pid, 0)
        child.killed = True
        self.pump(0)  # whatever it wrote before dying
        return when

    # -- reports --

    def pump(self, timeout: float) -> None:
        """Reads what the children reported (waiting up to *timeout* s for something), and reaps
        those that exited."""
        open_fds = {c.reports: c for c in self.children if c.reports >= 0}
        ready = select.select(list(open_fds), [], [], timeout)[0] if open_fds else []
        for fd in ready:
            child = open_fds[fd]
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                os.close(fd)
                child.reports = -1
                continue
            lines = (child.pending + data).split(b"\n")
            child.pending = lines.pop()
            for line in lines:
                event = json.loads(line)
                event["pid"] = child.pid
                child.events.append(event)
                self.record.reports.append(event)
        for child in self.children:
            # Reaped once its report pipe is at its end, so that a status is never seen before
            # the reports written just before the exit (a closing publisher's last one).
            if child.status is None and child.reports < 0:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
                if pid:
                    child.status = status
        if not open_fds and timeout:
            time.sleep(timeout)

    def pump_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.pump(left)

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Pumps until *predicate* returns something true, and returns it; records a hang (and
        raises Hang) after *timeout* seconds."""
        deadline = time.monotonic() + timeout
        while True:
            got = predicate()
            if got:
                return got
            if time.monotonic() > deadline:
                self.record.reports.append({"event": "hang", "pid": 0, "waiting for": what})
                raise Hang(what)
            self.pump(0.005)

    def asleep(self) -> set[int]:
        """The pids of the subscribers the topic's control segment shows asleep."""
        try:
            info = admin.topic_info(self.topic)
        except sps.ShmPubSubError:
            return set()
        return {s.pid for s in info.subscriber_details or () if s.asleep}

    def settle(self) -> int:
        """Waits until the publisher is up and every subscriber is attached to it: its epoch."""
        assert self.publisher is not None
        publisher = self.publisher

        def settled() -> int | None:
            ready = publisher.last("ready")
            if ready is None:
                return None
            for sub in self.live_subscribers():
                attached = sub.last("attached")
                if attached is None or attached["epoch"] != ready["epoch"]:
                    return None
            return int(ready["epoch"])

        return int(self.wait_for(settled, SETTLE, "the publisher to start and every subscriber to attach"))

    # -- the kills --

    def kill_publisher(self, kind: str) -> float:
        assert self.publisher is not None
        when = self.kill(self.publisher)
        self.kills[kind] += 1
        try:
            info = admin.topic_info(self.topic)
        except sps.ShmPubSubError:
            info = None  # killed before it created anything
        if info is not None and info.epoch is not None and info.published is not None:
            self.record.killed_epochs[info.epoch] = info.published
        self.start_publisher()
        return when

    def run_a_while(self) -> int:
        """Lets messages flow for a random while, once every process is up: the epoch."""
        epoch = self.settle()
        self.pump_for(self.rng.uniform(0, 0.1))
        return epoch

    def at_random(self) -> None:
        """Waits a random while: mostly with messages flowing, sometimes (right after a restart)
        while the publisher may still be creating the topic and the subscribers attaching."""
        if self.rng.random() < 0.7:
            self.run_a_while()
        else:
            self.pump_for(self.rng.uniform(0, 0.005))

    def pub_random(self) -> None:
        self.at_random()
        self.kill_publisher("pub-random")

    def pub_in_loan(self) -> None:
        epoch = self.run_a_while()
        assert self.publisher is not None
        publisher = self.publisher
        publisher.tell(LOAN_AND_STALL)
        stalled = self.wait_for(lambda: publisher.last("in-loan"), STEP, "the publisher to stall in a loan")
        self.kill_publisher("pub-in-loan")
        published = self.record.killed_epochs.get(epoch)
        if published != stalled["seq"]:
            self.violation(
                f"killed in the loan of message {stalled['seq']}; the topic says {published} published"
            )

    def pub_sleepers(self) -> None:
        epoch = self.pause()
        sleepers = self.live_subscribers()
        pids = {c.pid for c in sleepers}
        self.wait_for(lambda: pids <= self.asleep(), STEP, "every subscriber to fall asleep")
        when = self.kill_publisher("pub-sleepers")
        self.record.sleeper_kills.append((epoch, when, sorted(pids)))
        # Before any other kill (which could take one of them before it reports), every sleeper
        # must have seen the death; check_round says whether it did within the bound.
        self.wait_for(
            lambda: all(
                any(e["event"] == "span" and e["epoch"] == epoch for e in c.events) for c in sleepers
            ),
            STEP,
            "every sleeping subscriber to see its publisher killed",
        )

    def sub_random(self) -> None:
        self.at_random()
        self.kill(self.rng.choice(self.live_subscribers()))
        self.kills["sub-random"] += 1
        self.start_subscriber()

    def sub_asleep(self) -> None:
        self.pause()
        victim = self.rng.choice(self.live_subscribers())
        self.wait_for(lambda: victim.pid in self.asleep(), STEP, "the subscriber to fall asleep")
        self.kill(victim)
        self.kills["sub-asleep"] += 1
        self.start_subscriber()
        assert self.publisher is not None
        self.publisher.tell(GO)  # its next wake-up finds the victim dead

    def pause(self) -> int:
        epoch = self.run_a_while()
        assert self.publisher is not None
        publisher = self.publisher
        before = len(publisher.events)
        publisher.tell(PAUSE)
        self.wait_for(lambda: any(e["event"] == "paused" for e in publisher.events[before:]), STEP, "a pause")
        return epoch

    # -- the round --

    def run(self) -> RoundRecord:
        baseline = _objects()
        try:
            for _ in range(self.subscribers):
                self.start_subscriber()
            self.start_publisher()
            for event in self.events:
                getattr(self, event.replace("-", "_"))()
            self.run_a_while()
            self.finish()
        except Hang:
            pass
        finally:
            self.clean_up()
        self.record.leftovers = sorted(_objects() - baseline)
        return self.record

    def finish(self) -> None:
        assert self.publisher is not None
        publisher = self.publisher
        publisher.tell(CLOSE)
        self.wait_for(lambda: publisher.status is not None, STEP, "the publisher to close")
        closing = publisher.last("closing")
        if closing is not None and publisher.status == 0:
            self.record.final = (closing["epoch"], closing["published"])
        else:
            self.violation(f"the last publisher failed (status {publisher.status})")
        for sub in self.live_subscribers():
            sub.tell(STOP)  # those still waiting to re-attach: there is nothing left to attach to
        self.wait_for(lambda: not self.live_subscribers(), STEP, "every subscriber to finish")
        for child in self.children:
            if not child.killed and child.status != 0:
                self.violation(f"{child.role} {child.pid} exited with status {child.status}")

    def violation(self, what: str) -> None:
        self.record.reports.append({"event": "error", "pid": 0, "trace": what})

    def clean_up(self) -> None:
        """Kills whatever still runs (after a hang), reads the last reports, and removes what
        killed publishers left (by taking the topic over) if the round ended early."""
        for child in self.children:
            if child.status is None:
                self.kill(child)
        self.pump(0)
        for child in self.children:
            for fd in (child.reports, child.commands):
                if fd >= 0:
                    os.close(fd)
            child.reports = child.commands = -1
        if self.record.final is None:
            try:
                sps.Publisher(self.topic).close()
            except sps.ShmPubSubError:
                pass


class Hang(Exception):
    """A step did not finish in time (recorded as a violation)."""


# -- the run ------------------------------------------------------------------------------------------


def summarise(record: RoundRecord, totals: Counter[str], detections: list[float]) -> None:
    """Adds a round's counts to *totals*, and to *detections* how long each sleeping subscriber
    took to see its publisher killed."""
    totals["published"] += sum(record.killed_epochs.values()) + (record.final[1] if record.final else 0)
    totals["leaky rounds"] += bool(record.leftovers)
    for r in record.reports:
        if r["event"] == "span":
            totals["spans"] += 1
            for key in ("received", "lost", "views", "overwritten", "torn"):
                totals[key] += r.get(key, 0)
        elif r["event"] == "corrupt":
            totals["corrupt"] += 1
    for epoch, killed_at, pids in record.sleeper_kills:
        for r in record.reports:
            if r["event"] == "span" and r["epoch"] == epoch and r["pid"] in pids:
                detections.append(r["at"] - killed_at)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="tests/soak.py")
    parser.add_argument("--rounds", type=int, default=100, help="rounds to run (default 100)")
    parser.add_argument("--seed", type=int, help="seed of the schedule (default: random, printed)")
    parser.add_argument("--start", type=int, default=0, help="number of the first round (to replay one)")
    parser.add_argument("--subscribers", type=int, default=3, help="subscriber processes (default 3)")
    parser.add_argument(
        "--bound",
        type=float,
        default=2.0,
        help="seconds within which a sleeping subscriber must see its publisher killed (default 2)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only violations and the summary")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.subscribers < 1 or args.bound <= 0:
        parser.error("--rounds and --subscribers must be at least 1, --bound above 0")
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    # A socket directory of its own, inherited by every child: no other program's sockets in it.
    sockets = tempfile.mkdtemp(prefix="shmpubsub-soak-")
    os.environ["SHMPUBSUB_RUNTIME_DIR"] = sockets
    try:
        return _soak(args, seed)
    finally:
        if not os.listdir(sockets):  # kept, for a look, if a socket was left in it
            shutil.rmtree(sockets, ignore_errors=True)


def _soak(args: argparse.Namespace, seed: int) -> int:
    print(f"crash soak: {args.rounds} rounds from {args.start}, seed {seed}, {args.subscribers} subscribers")
    totals: Counter[str] = Counter()
    detections: list[float] = []
    kills: Counter[str] = Counter()
    failed = 0
    began = time.monotonic()
    for number in range(args.start, args.start + args.rounds):
        round_ = Round(number, seed, args.subscribers, args.bound)
        record = round_.run()
        kills += round_.kills
        summarise(record, totals, detections)
        problems = check_round(record)
        if problems or not args.quiet:
            verdict = f"{len(problems)} VIOLATIONS" if problems else "ok"
            what = f"{round_.slots} slots, {round_.variant} messages, kills {'+'.join(round_.events)}"
            print(f"round {number}: {what}: {verdict}")
        for problem in problems:
            print(f"  {problem}")
        if problems:
            failed += 1
            print(f"  replay its schedule: python tests/soak.py --seed {seed} --start {number} --rounds 1")
    print(f"rounds: {args.rounds} in {time.monotonic() - began:.0f} s, {failed} with violations")
    print(f"kills: {sum(kills.values())} (" + ", ".join(f"{kind} {kills[kind]}" for kind in EVENTS) + ")")
    print(
        f"messages: published {totals['published']}, received {totals['received']} and lost to lapping "
        f"{totals['lost']}, over {totals['spans']} subscriber spans"
    )
    print(
        f"zero-copy views: {totals['views']} read intact, {totals['overwritten']} overwritten while read, "
        f"of which {totals['torn']} torn and caught"
    )
    detections.sort()
    quantiles = (
        [detections[int(q * (len(detections) - 1))] * 1000 for q in (0.5, 0.99, 1)] if detections else []
    )
    print(
        f"crash detection: {len(detections)} sleeping subscribers saw their publisher killed after "
        + " / ".join(f"{ms:.1f}" for ms in quantiles)
        + f" ms (median / 99th percentile / slowest; bound {args.bound * 1000:.0f} ms)"
    )
    print(
        f"corrupt payloads delivered: {totals['corrupt']}; "
        f"rounds that left objects in /dev/shm or the socket directory: {totals['leaky rounds']}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
