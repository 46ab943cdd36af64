"""The ``shmpubsub`` command (also ``python -m shmpubsub``): a thin layer over :mod:`shmpubsub.admin`
and :class:`shmpubsub.Subscriber`."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import logging
import os
import signal
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any, TextIO

from . import admin
from .errors import InvalidArgument, PublisherGone, ReceiveTimeout, ShmPubSubError, one_line
from .names import validate_topic
from .subscriber import Subscriber

EPILOG = """\
exit status:
  0    success; for tail, hz and bridge also when the publisher goes away, on Ctrl-C or SIGTERM,
       or when the output pipe is closed
  1    the topic does not exist, its segment is invalid, or another error (one line on stderr)
  2    usage error: unknown option, bad argument, invalid topic name
  130  Ctrl-C during ls, info, gc or demo
  137  bridge: its bridge process was killed by SIGKILL (128 + the signal's number; what it
       left was removed)

Colour is used only when stdout is a terminal and NO_COLOR is not set."""

# SGR codes for the few things that are coloured.
_BOLD, _DIM, _RED, _GREEN, _YELLOW, _CYAN = "1", "2", "31", "32", "33", "36"
_STATE_COLOURS = {"alive": _GREEN, "closed": _YELLOW, "dead": _RED, "starting": _CYAN, "unknown": _RED}

_TIMES = "\N{MULTIPLICATION SIGN}"

# A table cell: its text, optionally with an SGR code.
Cell = str | tuple[str, str]


class _Style:
    """Colours text when writing to a terminal, unless NO_COLOR is set (https://no-color.org)."""

    def __init__(self, stream: TextIO) -> None:
        self.enabled = use_colour(stream)

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled and code else text


def use_colour(stream: TextIO) -> bool:
    """True if *stream* is a terminal and NO_COLOR is unset or empty."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def human_size(nbytes: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def format_table(header: Sequence[str], rows: Sequence[Sequence[Cell]], align: str, style: _Style) -> str:
    """Aligned columns (``align``: one ``l`` or ``r`` per column); the last column is not padded."""
    plain = [[c if isinstance(c, str) else c[0] for c in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in plain]) for i, h in enumerate(header)]

    def line(cells: Sequence[Cell], header_row: bool = False) -> str:
        out = []
        for i, cell in enumerate(cells):
            text, code = (cell, _BOLD if header_row else "") if isinstance(cell, str) else cell
            last = i == len(cells) - 1
            padded = text.rjust(widths[i]) if align[i] == "r" else (text if last else text.ljust(widths[i]))
            out.append(style(padded, code))
        return "  ".join(out)

    return "\n".join([line(header, header_row=True), *(line(row) for row in rows)])


def _json(value: Any) -> str:
    return json.dumps(value, indent=2)


def _created(ns: int | None) -> str:
    if ns is None:
        return "-"
    when = datetime.datetime.fromtimestamp(ns / 1e9).astimezone()
    return when.isoformat(sep=" ", timespec="seconds")


def _publisher_cell(topic: admin.TopicInfo) -> tuple[str, str]:
    pid = "-" if topic.publisher_pid is None else str(topic.publisher_pid)
    return f"{pid} {topic.state}", _STATE_COLOURS.get(topic.state, "")


def _na(value: object) -> str:
    return "-" if value is None else str(value)


# -- ls -----------------------------------------------------------------------------


def _ls(args: argparse.Namespace) -> int:
    found = admin.topics()
    if args.json:
        print(_json([dataclasses.asdict(t) for t in found]))
        return 0
    if not found:
        print("no topics", file=sys.stderr)
        return 0
    style = _Style(sys.stdout)
    header = ["TOPIC", "SIZE", f"SLOTS{_TIMES}SLOT_SIZE", "PUBLISHER", "SUBS", "PUBLISHED"]
    align = "lrrlrr"
    problems = any(t.problem for t in found)
    if problems:
        header.append("PROBLEM")
        align += "l"
    rows: list[list[Cell]] = []
    for t in found:
        geometry = "-" if t.slots is None else f"{t.slots}{_TIMES}{t.slot_size}"
        row: list[Cell] = [t.name, human_size(t.size), geometry, _publisher_cell(t)]
        row += [_na(t.subscribers), _na(t.published)]
        if problems:
            row.append((t.problem or "", _YELLOW))
        rows.append(row)
    print(format_table(header, rows, align, style))
    return 0


# -- info ---------------------------------------------------------------------------


def _info(args: argparse.Namespace) -> int:
    t = admin.topic_info(args.topic) if args.path is None else admin.file_info(args.path)
    if args.json:
        print(_json(dataclasses.asdict(t)))
    else:
        _print_info(t, _Style(sys.stdout))
    if t.problem:
        print(f"shmpubsub: {t.path}: {t.problem}", file=sys.stderr)
        return 1
    return 0


def _print_info(t: admin.TopicInfo, style: _Style) -> None:
    text, code = _publisher_cell(t)
    subscribers = _na(t.subscribers)
    if t.max_subscribers is not None:
        subscribers += f" (of at most {t.max_subscribers})"
    file_backed = t.data_file is not None
    fields = [
        ("topic", t.name, _BOLD),
        ("path", t.path, ""),
        *([("ring file", t.data_file or "", "")] if file_backed and t.data_file != t.path else []),
        ("publisher", text, code),
        ("size", f"{human_size(t.size)} ({t.size} bytes, data and control)", ""),
        ("slots", _na(t.slots), ""),
        ("slot size", "-" if t.slot_size is None else f"{t.slot_size} bytes", ""),
        ("published", _na(t.published), ""),
        ("closed", "-" if t.closed is None else "yes" if t.closed else "no", ""),
        ("epoch", "-" if t.epoch is None else f"{t.epoch:#018x}", ""),
        ("created", _created(t.created_ns), ""),
        ("layout", _na(t.layout_version), ""),
        ("subscribers", subscribers, ""),
    ]
    if file_backed:
        fields.append(("flushed", f"{_na(t.flushed)} (messages known to be on disk)", ""))
        if t.state == "dead" and t.closed is False:
            crashed = "crashed: its publisher died without closing it (the next one repairs the ring)"
            fields.append(("ended", crashed, _RED))
    if t.problem:
        fields.append(("problem", t.problem, _YELLOW))
    width = max(len(name) for name, _, _ in fields)
    for name, value, colour in fields:
        print(f"{name.ljust(width)}  {style(value, colour)}")
    if t.subscriber_details:
        rows: list[list[Cell]] = []
        for s in t.subscriber_details:
            alive: Cell = ("yes", _GREEN) if s.alive else ("no", _RED)
            rows.append(
                [str(s.index), str(s.pid), alive, str(s.lag), str(s.lost), "yes" if s.asleep else "no"]
            )
        print()
        print(format_table(["ENTRY", "PID", "ALIVE", "LAG", "LOST", "ASLEEP"], rows, "rrlrrl", style))


# -- tail ---------------------------------------------------------------------------

_PREVIEW = 32


def format_message(seq: int, data: bytes, style: _Style) -> str:
    """One line: the sequence number, then the payload as text if it is printable UTF-8, else
    its length and the hex of its first 32 bytes."""
    try:
        text: str | None = data.decode()
    except UnicodeDecodeError:
        text = None
    if text and text.isprintable():
        return f"{style(str(seq), _DIM)} {text}"
    parts = [style(str(seq), _DIM), style(f"<{len(data)} bytes>", _CYAN)]
    if data:
        parts.append(data[:_PREVIEW].hex(" ") + (" …" if len(data) > _PREVIEW else ""))
    return " ".join(parts)


def _note_lost(count: int, before: int) -> None:
    if count > 0:
        print(
            f"shmpubsub: lost {count} messages before seq {before} (lapped by the publisher)", file=sys.stderr
        )


def _tail(args: argparse.Namespace) -> int:
    style = _Style(sys.stdout)
    out = sys.stdout
    start = "next" if args.lines is None else "oldest"
    with Subscriber(args.topic, start=start, path=args.path, wait=args.wait) as sub:
        if args.lines is not None:
            end = sub.next_seq + sub.pending  # write_seq now
            first = max(0, end - args.lines)
            buf = bytearray(max(sub.slot_size, 1))
            while sub.next_seq < end:
                lost = sub.lost
                size = sub.receive_into(buf)  # one copy, no allocation, for those skipped too
                if size is None:
                    continue  # overwritten while being copied, again and again: read on
                seq = sub.last_seq
                # Only losses among the messages we were to print count.
                upto = seq if args.follow else min(seq, end)
                _note_lost(upto - max(seq - (sub.lost - lost), first), upto)
                if seq >= end and not args.follow:
                    break
                if seq >= first:
                    out.write(format_message(seq, bytes(buf[:size]), style) + "\n")
            out.flush()
            if not args.follow:
                return 0
        while True:
            lost = sub.lost
            msg = sub.try_receive()
            if msg is None:
                out.flush()  # one flush per burst
                try:
                    msg = sub.receive()
                except PublisherGone as gone:
                    print(f"shmpubsub: {gone}", file=sys.stderr)
                    return 0
            _note_lost(sub.lost - lost, msg.seq)
            out.write(format_message(msg.seq, msg.data, style) + "\n")


# -- hz -----------------------------------------------------------------------------


def _hz(args: argparse.Namespace) -> int:
    with Subscriber(args.topic, wait=args.wait) as sub:
        print(f"topic {args.topic!r}: measuring every {args.window:g} s (Ctrl-C to stop)", file=sys.stderr)
        buf = bytearray(max(sub.slot_size, 1))
        reports = received = nbytes = 0
        lost = sub.lost
        began = time.monotonic()
        report_at = began + args.window

        def report(now: float) -> None:
            elapsed = now - began
            missed = sub.lost - lost
            print(
                f"{(received + missed) / elapsed:10.1f} msg/s  {human_size(nbytes / elapsed):>10}/s  "
                f"received {received}  lost {missed}  in {elapsed:.2f} s",
                flush=True,
            )

        while True:
            size = sub.receive_into(buf)  # no allocation while messages keep coming
            if size is None:
                try:
                    size = len(sub.receive(timeout=max(0.0, report_at - time.monotonic())))
                except ReceiveTimeout:
                    pass
                except PublisherGone as gone:
                    if received or sub.lost > lost:  # what the last, partial window saw
                        report(time.monotonic())
                    print(f"shmpubsub: {gone}", file=sys.stderr)
                    return 0
            if size is not None:
                received += 1
                nbytes += size
            now = time.monotonic()
            if now >= report_at:
                report(now)
                reports += 1
                if args.count and reports >= args.count:
                    return 0
                received = nbytes = 0
                lost = sub.lost
                began, report_at = now, now + args.window


# -- gc -----------------------------------------------------------------------------


def _gc(args: argparse.Namespace) -> int:
    removed = admin.collect_garbage(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for item in removed:
        print(f"{verb} {item}")
    things = "object" if len(removed) == 1 else "objects"
    print(f"{verb} {len(removed)} {things}" + (" (dry run)" if args.dry_run else ""))
    return 0


# -- demo ---------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.run(count=args.count, interval=args.interval)


# -- bridge -------------------------------------------------------------------------


def _bridge(args: argparse.Namespace) -> int:
    """Runs the bridge in a child process under this one (bridge.SupervisedBridge, whose child
    is ``python -m shmpubsub.bridge``), which removes what the child leaves if it is killed."""
    from . import bridge

    supervised = bridge.SupervisedBridge(
        args.direction,
        args.topic,
        args.bind if args.direction == "out" else args.connect,
        local_name=getattr(args, "local_name", None),
        hwm=args.hwm,
        report=args.report,
        verbose=getattr(args, "verbose", 0),
    )
    with supervised:
        for signum in bridge.STOP_SIGNALS:  # the child may get them too (Ctrl-C): stopping is idempotent
            signal.signal(signum, lambda *_: supervised.stop())
        code = supervised.wait()
    if code < 0:
        try:
            how = signal.Signals(-code).name
        except ValueError:  # a real-time signal has no name
            how = f"signal {-code}"
        print(f"shmpubsub: the bridge process (pid {supervised.pid}) was killed by {how}", file=sys.stderr)
    for item in supervised.removed:
        print(f"shmpubsub: removed {item}", file=sys.stderr)
    return code if code >= 0 else 128 - code  # the shell's convention for a killed process


# -- the parser ---------------------------------------------------------------------


def _topic(value: str) -> str:
    try:
        return validate_topic(value)
    except InvalidArgument as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, not {value!r}")
    return number


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 1e6:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, not {value!r}")
    return seconds


def _wait_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0 (inf: for ever), not {value!r}")
    return seconds


def _wait_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--wait",
        type=_wait_seconds,
        metavar="SECONDS",
        help="wait up to SECONDS for the topic to appear (inf: for ever) instead of exiting at once",
    )


def _topic_or_path(command: argparse.ArgumentParser, path_help: str) -> None:
    command.add_argument("topic", type=_topic, metavar="TOPIC", nargs="?")
    command.add_argument("--path", metavar="FILE", help=path_help)


def build_parser() -> argparse.ArgumentParser:
    # -v is accepted before and after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log what the library does (-vv: more)",
    )

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=textwrap.fill(description, 79),
            epilog=EPILOG,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    parser = argparse.ArgumentParser(
        prog="shmpubsub",
        description="Publish/subscribe through shared memory: inspect, follow and clean up topics.",
        epilog=EPILOG,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = command("ls", "list the topics in /dev/shm", "List every topic in /dev/shm, live or dead.")
    ls.add_argument("--json", action="store_true", help="print JSON (a list of objects) for scripts")
    ls.set_defaults(run=_ls)

    info = command(
        "info",
        "show a topic's header and subscribers",
        "Show a topic's header and its subscribers (lag: messages published that it has not taken yet).",
    )
    _topic_or_path(info, "a ring file (a file-backed topic's, live or not) instead of a topic")
    info.add_argument("--json", action="store_true", help="print JSON for scripts")
    info.set_defaults(run=_info)

    tail = command(
        "tail",
        "print a topic's messages",
        "Print messages as they arrive, one line each: the sequence number, then the payload as text "
        "if it is printable UTF-8, else <length> and the hex of its first 32 bytes. Losses (the "
        "publisher lapped us) are reported on stderr. Ends when the publisher goes (a note on stderr) "
        "or on Ctrl-C.",
    )
    _topic_or_path(tail, "read a ring file (a file-backed topic's, live or not) instead of a topic")
    tail.add_argument(
        "-n",
        "--lines",
        type=_count,
        metavar="N",
        help="print the last N messages the ring still holds, then exit (unless -f)",
    )
    tail.add_argument("-f", "--follow", action="store_true", help="with -n: keep printing new messages")
    _wait_option(tail)
    tail.set_defaults(run=_tail)

    hz = command(
        "hz",
        "measure a topic's message rate and bandwidth",
        "Print the message rate (received and lost) and the bandwidth of what was received, every "
        "--window seconds, until the publisher goes or Ctrl-C.",
    )
    hz.add_argument("topic", type=_topic, metavar="TOPIC")
    hz.add_argument("-w", "--window", type=_seconds, default=1.0, help="seconds per report (default 1)")
    hz.add_argument("-c", "--count", type=_count, default=0, metavar="N", help="stop after N reports")
    _wait_option(hz)
    hz.set_defaults(run=_hz)

    gc = command(
        "gc",
        "remove what dead publishers and subscribers left behind",
        "Remove the segments of topics whose publisher is gone (exactly those a new publisher would take "
        "over), control segments without a data segment, dead subscribers' entries and sockets in live "
        "topics, and sockets nobody is bound to. Never touches a live topic's segments; files with "
        "our prefix that are not ours are reported, not removed.",
    )
    gc.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    gc.set_defaults(run=_gc)

    demo = command(
        "demo", "run a publisher and two subscribers in separate processes", "Run the README's demo."
    )
    demo.add_argument("-n", "--count", type=int, default=10, help="messages to publish (default 10)")
    demo.add_argument("--interval", type=float, default=0.1, help="seconds between messages (default 0.1)")
    demo.set_defaults(run=_demo)

    bridge = command(
        "bridge",
        "carry a topic to another host over ZeroMQ (needs: pip install 'shmpubsub[bridge]')",
        "Carry a topic between hosts over ZeroMQ. `bridge out TOPIC --bind tcp://HOST:PORT` subscribes "
        "to a local topic and republishes every message on a PUB socket, with its sequence number and "
        "the losses so far; `bridge in TOPIC --connect tcp://HOST:PORT [--as NAME]` republishes them "
        "into a local topic of the same geometry. The local publisher is never slowed: a slow network "
        "costs messages, which are counted. Runs until Ctrl-C, SIGTERM or SIGHUP, then prints its "
        "counters. The bridge runs in a child process: if it is killed, this command removes what it "
        "left (the local topic of `in`, the subscriber entry of `out`); if this command is killed, the "
        "bridge closes cleanly.",
    )
    directions = bridge.add_subparsers(dest="direction", required=True, metavar="DIRECTION")
    for direction, help_text in (
        ("out", "republish a local topic on the network"),
        ("in", "republish a topic from the network locally"),
    ):
        side = directions.add_parser(
            direction,
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
            epilog=EPILOG,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        side.add_argument("topic", type=_topic, metavar="TOPIC")
        if direction == "out":
            side.add_argument("--bind", required=True, metavar="ADDR", help="e.g. tcp://0.0.0.0:5555")
        else:
            side.add_argument("--connect", required=True, metavar="ADDR", help="e.g. tcp://host:5555")
            side.add_argument(
                "--as",
                dest="local_name",
                type=_topic,
                metavar="NAME",
                help="local topic name (default TOPIC)",
            )
        side.add_argument(
            "--hwm", type=_count, default=1000, metavar="N", help="messages queued before dropping (1000)"
        )
        side.add_argument(
            "--report", type=_seconds, metavar="S", help="print the counters on stderr every S seconds"
        )
    bridge.set_defaults(run=_bridge)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info" and (args.topic is None) == (args.path is None):
        parser.error("info needs either TOPIC or --path FILE")
    if args.command == "tail" and args.topic is None and args.path is None:
        parser.error("tail needs TOPIC, --path FILE, or both")
    verbose = getattr(args, "verbose", 0)
    level = logging.WARNING if not verbose else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(name)s: %(message)s")
    if isinstance(sys.stdout, io.TextIOWrapper):  # never fail on a payload the terminal cannot show
        sys.stdout.reconfigure(errors="backslashreplace")
    following = args.command in ("tail", "hz", "bridge")
    if following:  # stop as on Ctrl-C, so that the subscriber is closed and leaves nothing behind
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 0 if following else 130
    except BrokenPipeError:
        # The reader went away (`shmpubsub tail x | head`); nothing more to say, to anyone.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ShmPubSubError, OSError) as e:
        print(f"shmpubsub: {one_line(e)}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
