"""Looking at topics from outside, and cleaning up after dead processes (``shmpubsub ls``,
``info`` and ``gc`` are thin layers over this module).

Looking never disturbs a topic: segments are opened and mapped read-only (the control segment
too: reading entries only loads from it), and the single-writer lock is probed with
``F_OFD_GETLK``, never taken. Only :func:`collect_garbage` and :func:`clean_up_after` (the same,
narrowed to what one dead process left) write, and only what a new publisher or the topic's own
publisher would remove or reclaim anyway.

**Is the publisher alive?** The single-writer lock decides, not the pid in the header. The
kernel drops the lock when the publisher's process dies, and a new publisher takes the topic
over exactly when the lock is free; the lock also holds across pid namespaces (a publisher in a
container that shares ``/dev/shm``, whose pid means nothing here) and cannot be fooled by a
reused pid. A pid that is still alive while the lock is free means the process gave the topic
up without closing it (it closed the descriptor): dead all the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import posix_ipc

from . import _proc, filebacked, lifecycle, wakeup
from ._core.control import Control
from ._core.header import ForeignSegment, HeaderNotReady
from .errors import (
    InvalidArgument,
    InvalidSegment,
    InvalidType,
    PermissionDenied,
    SegmentError,
    ShmPubSubError,
    TopicNotFound,
)
from .lifecycle import STARTUP_GRACE
from .names import CONTROL_SUFFIX, PREFIX, SHM_DIR, socket_name, validate_topic
from .records import FileHeaderInfo, HeaderInfo, SubscriberInfo
from .segment import Segment

log = logging.getLogger(__name__)

__all__ = [
    "SubscriberStatus",
    "TopicInfo",
    "clean_up_after",
    "collect_garbage",
    "file_info",
    "topic_info",
    "topics",
]


@dataclass(frozen=True)
class SubscriberStatus:
    """One attached subscriber, from its control entry (values its subscriber wrote: untrusted).

    ``lag`` is how many published messages it has not taken yet (``write_seq - read_pos``); a
    subscriber reports its position on each read, so before its first read ``read_pos`` is 0.
    ``alive`` checks its pid and start time, so a reused pid does not pass for it.
    """

    index: int
    pid: int
    alive: bool
    read_pos: int
    lag: int
    lost: int
    asleep: bool


@dataclass(frozen=True)
class TopicInfo:
    """What a topic's segments say about it.

    ``state`` is ``"alive"`` (a publisher holds the topic), ``"closed"`` (its publisher closed it
    and is removing it), ``"dead"`` (nobody holds it: its publisher died; ``gc`` removes it, a new
    publisher takes it over), ``"starting"`` (its publisher is still creating it) or ``"unknown"``
    (the segment could not be read or is not a shmpubsub segment). ``problem`` says what is wrong,
    if anything; the fields after it are None where the header could not be read. ``size`` is in
    bytes, data and control segments together. ``subscriber_details`` is filled by
    :func:`topic_info` only. For a file-backed topic, ``data_file`` is its ring file (the data
    segment is then the file, and ``path`` the stub naming it, or the file itself for
    :func:`file_info`) and ``flushed`` how many messages are known to be on disk; a ring file
    whose publisher died without closing it is ``"dead"``, one closed cleanly ``"closed"``.
    """

    name: str
    path: str
    size: int
    state: str
    publisher_alive: bool | None
    problem: str | None = None
    slots: int | None = None
    slot_size: int | None = None
    publisher_pid: int | None = None
    subscribers: int | None = None
    max_subscribers: int | None = None
    published: int | None = None
    closed: bool | None = None
    epoch: int | None = None
    created_ns: int | None = None
    layout_version: int | None = None
    subscriber_details: tuple[SubscriberStatus, ...] | None = None
    data_file: str | None = None
    flushed: int | None = None


def topics() -> list[TopicInfo]:
    """Every topic in /dev/shm, sorted by name, including what cannot be read or is not a
    shmpubsub segment though it carries the prefix (with ``problem`` set), and control segments
    left without their data segment. Never raises for a bad segment.

    Costs a directory listing, then per topic a few system calls and mapping two pages.
    """
    data, controls, foreign = _scan()
    found: list[TopicInfo] = []
    for topic in sorted(data):
        with contextlib.suppress(TopicNotFound):  # removed since the listing
            found.append(_inspect(topic, details=False))
    for topic in sorted(controls - data):
        with contextlib.suppress(TopicNotFound):
            found.append(_inspect_orphan(topic))
    for name, problem in foreign.items():
        path = os.path.join(SHM_DIR, name)
        found.append(TopicInfo(name[len(PREFIX) :], path, _file_size(path), "unknown", None, problem))
    return sorted(found, key=lambda t: (t.name, t.path))


def topic_info(name: str) -> TopicInfo:
    """One topic, with its subscribers (``subscriber_details``). A segment that cannot be read
    or fails validation is described by ``problem`` rather than raised.

    Raises TopicNotFound if the topic does not exist, InvalidArgument for a bad name.
    """
    return _inspect(validate_topic(name), details=True)


def file_info(path: str | os.PathLike[str]) -> TopicInfo:
    """A ring file (``Publisher(..., path=...)``), whether its publisher lives or not, with its
    subscribers if it has a live one. Looks without disturbing: read-only, lock probed.

    Raises TopicNotFound if the file does not exist, InvalidSegment if it is not a valid ring
    file, PermissionDenied if it may not be read.
    """
    ring_path = filebacked.ring_path(path)
    look, locked = _look_at_file(ring_path)
    if look.header is None or look.file_header is None:
        raise InvalidSegment(look.problem or f"{ring_path} is not initialised")
    if not look.file_header.topic:
        raise InvalidSegment(f"{ring_path} is a shmpubsub segment but not a ring file (it names no topic)")
    return _describe(look.file_header.topic, ring_path, look, locked, details=True)


def collect_garbage(dry_run: bool = False) -> list[str]:
    """Removes what dead processes left behind and returns a description of each object removed
    (with *dry_run*, of each that would be, removing nothing):

    - the data and control segments of topics nobody holds: the single-writer lock is free and
      the header initialised (or uninitialised for longer than a publisher's start-up grace),
      which is exactly when a new publisher would take the topic over. The lock is taken while
      removing, so no publisher can re-create the topic meanwhile (one starting in that instant
      gets TopicExists);
    - control segments without a data segment;
    - in live topics, the control entries and sockets of subscribers whose process is gone (as
      the topic's publisher does when it next finds them);
    - sockets in the socket directories (ours and those the topics name) that nobody is bound to.

    Never touches a live topic's segments (the lock is probed, not taken), nor anything that is
    not positively ours: a file with our prefix that is not a shmpubsub segment or socket is
    reported as a warning on the ``shmpubsub.admin`` logger and left alone. Costs a few system
    calls per object, plus a 0.2 s wait if some segment is uninitialised and unlocked.
    """
    removed: list[str] = []
    data, controls, foreign = _scan()
    for name, why in foreign.items():
        log.warning("%s: %s; left alone", os.path.join(SHM_DIR, name), why)
    socket_dirs: set[str] = set()
    live: list[tuple[str, int]] = []
    unready: list[tuple[str, Segment]] = []
    for topic in sorted(data):
        outcome = _judge(topic)
        if outcome is None:
            continue
        if isinstance(outcome, tuple):
            live.append(outcome)
        elif outcome.kind == "unready":
            unready.append((topic, outcome.segment))
            continue  # keeps the segment open until the grace is over
        elif outcome.kind == "removable":
            with contextlib.closing(outcome.segment):
                removed += _remove_topic(topic, outcome.segment, outcome.reason, dry_run, socket_dirs)
        else:
            outcome.segment.close()
    if unready:
        time.sleep(STARTUP_GRACE)
        for topic, segment in unready:
            with contextlib.closing(segment):
                reason = _dead_after_grace(segment)
                if reason is not None:
                    removed += _remove_topic(topic, segment, reason, dry_run, socket_dirs)
    for topic in sorted(controls - data):
        removed += _remove_orphan_control(topic, dry_run)
    reaped_sockets: set[str] = set()
    for topic, epoch in live:
        removed += _reap(topic, epoch, dry_run, socket_dirs, reaped_sockets)
    removed += _sweep_socket_dirs(socket_dirs, dry_run, reaped_sockets)
    for item in removed:
        log.info("%s %s", "would remove" if dry_run else "removed", item)
    return removed


def clean_up_after(pid: int, start_time: int, topics: Iterable[str]) -> list[str]:
    """Removes what one dead process left behind in *topics*, and returns a description of
    each object removed (what :class:`shmpubsub.bridge.SupervisedBridge` does when its bridge
    process dies):

    - a topic it published, if nobody took it over since: its single-writer lock is free and
      its header names this process (pid *pid*, started at *start_time*, as
      ``/proc/PID/stat`` gives it), or the header is still uninitialised after a publisher's
      start-up grace (its creator died while creating it);
    - its subscriber entries (those naming this pid and start time) and their sockets;
    - then, as ``gc`` does, sockets in the socket directories that nobody is bound to.

    Everything else, a live topic above all, is left alone. Raises InvalidArgument if the
    process is still running or a topic name is invalid, InvalidType if *topics* is a single
    string. Costs a few system calls per topic, plus a 0.2 s wait if the data segment is
    uninitialised and unlocked.
    """
    if isinstance(topics, str):
        raise InvalidType(f"topics must be a collection of topic names, not the string {topics!r}")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise InvalidArgument(f"pid must be a process id > 0, not {pid!r}")
    if _proc.is_alive(pid, start_time):
        raise InvalidArgument(f"process {pid} is still running: what it holds is not garbage")
    owner = (pid, start_time)
    names = [validate_topic(topic) for topic in topics]
    removed: list[str] = []
    socket_dirs: set[str] = set()
    reaped_sockets: set[str] = set()
    for topic in names:
        outcome = _judge(topic)
        if isinstance(outcome, _Verdict):
            with contextlib.closing(outcome.segment):
                reason: str | None = None
                if outcome.kind == "unready":
                    time.sleep(STARTUP_GRACE)
                    reason = _dead_after_grace(outcome.segment)
                elif outcome.kind == "removable" and outcome.publisher == owner:
                    reason = outcome.reason
                if reason is not None:
                    removed += _remove_topic(topic, outcome.segment, reason, False, socket_dirs)
        removed += _reap(topic, None, False, socket_dirs, reaped_sockets, left_by=owner)
    removed += _sweep_socket_dirs(socket_dirs, False, reaped_sockets)
    for item in removed:
        log.info("removed %s", item)
    return removed


# -- looking ------------------------------------------------------------------------


def _path(topic: str, suffix: str = "") -> str:
    return os.path.join(SHM_DIR, PREFIX + topic + suffix)


def _file_size(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _valid_topic(name: str) -> bool:
    try:
        validate_topic(name)
    except InvalidArgument:
        return False
    return True


def _scan() -> tuple[set[str], set[str], dict[str, str]]:
    """(topics with a data segment, topics with a control segment, {file name: problem} for the
    files with our prefix that are neither)."""
    data: set[str] = set()
    controls: set[str] = set()
    foreign: dict[str, str] = {}
    try:
        names = sorted(n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX))
    except FileNotFoundError:
        return data, controls, foreign
    for name in names:
        try:
            st = os.lstat(os.path.join(SHM_DIR, name))
        except FileNotFoundError:
            continue
        rest = name[len(PREFIX) :]
        if not stat.S_ISREG(st.st_mode):
            foreign[name] = "not a shmpubsub segment (not a regular file)"
        elif rest.endswith(CONTROL_SUFFIX) and _valid_topic(rest[: -len(CONTROL_SUFFIX)]):
            controls.add(rest[: -len(CONTROL_SUFFIX)])
        elif _valid_topic(rest):
            data.add(rest)
        else:
            foreign[name] = "not a shmpubsub segment (not a valid topic name)"
    return data, controls, foreign


def _owner(path: str) -> str:
    try:
        st = os.lstat(path)
    except OSError:
        return "gone"
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = f"uid {st.st_uid}"
    return f"owner {user}, mode {stat.S_IMODE(st.st_mode):04o}"


@dataclass(frozen=True)
class _Look:
    """What a data segment (or ring file) holds. ``kind``: "ok" (a valid header), "unready" (a
    creator not done yet, or dead while creating), "invalid" (ours but unusable: other layout
    version, corrupt, a stub whose file is gone) or "foreign" (not ours)."""

    kind: str
    header: HeaderInfo | None = None
    problem: str | None = None
    data_file: str | None = None  # the ring file of a file-backed topic
    file_header: FileHeaderInfo | None = None
    file_size: int = 0


def _read_header(segment: Segment) -> tuple[str, HeaderInfo | None, str | None]:
    """Classifies a data segment as the takeover check does: ("ok", header, None), ("unready",
    None, None) for a creator not done yet (or dead while creating), ("invalid", None, problem)
    for ours but unusable (other layout version, corrupt) or ("foreign", None, problem). A
    file-backed topic's stub is followed to its ring file."""
    look = _read_ring(segment)
    return look.kind, look.header, look.problem


def _read_ring(segment: Segment) -> _Look:
    """_read_header, with what a ring file adds."""
    look = lifecycle.classify(segment, "the segment" if segment.name else segment.what)
    if look.stub is not None:
        file_look, _ = _look_at_file(look.stub.path)
        return file_look
    if look.kind == "ok" and segment.name is None:
        return _Look("ok", look.header, None, segment.path, look.file, segment.nbytes)
    return _Look(look.kind, look.header, None if look.kind == "unready" else look.problem)


def _look_at_file(path: str) -> tuple[_Look, bool]:
    """A ring file and whether a publisher holds it, read-only."""
    try:
        segment = Segment.open_file(path)
    except TopicNotFound:
        return _Look("invalid", problem=f"its ring file {path} is gone", data_file=path), False
    except (PermissionDenied, InvalidArgument, SegmentError) as e:
        return _Look("invalid", problem=str(e), data_file=path, file_size=_file_size(path)), False
    with contextlib.closing(segment):
        locked = segment.lock_held()
        look = _read_ring(segment)
    if look.data_file is None:  # not a valid ring file; the problem names it
        look = _Look(look.kind, problem=look.problem, data_file=path, file_size=_file_size(path))
    return look, locked


@contextlib.contextmanager
def _mapped_control(topic: str, writable: bool) -> Iterator[Control]:
    """The topic's control segment, validated. Raises TopicNotFound, PermissionDenied or
    InvalidSegment."""
    segment = Segment.open(topic, writable=writable, suffix=CONTROL_SUFFIX)
    with contextlib.closing(segment):
        if segment.nbytes == 0:
            raise HeaderNotReady("the control segment is not initialised")
        with segment.mapped(writable) as (base, size):
            yield Control(base, size, "the control segment")


def _inspect(topic: str, details: bool) -> TopicInfo:
    path = _path(topic)
    control_size = _file_size(_path(topic, CONTROL_SUFFIX))
    try:
        segment = Segment.open(topic)
    except PermissionDenied:
        size = _file_size(path) + control_size
        return TopicInfo(topic, path, size, "unknown", None, f"not readable by us ({_owner(path)})")
    except InvalidSegment as e:  # not a regular file (any more)
        return TopicInfo(topic, path, _file_size(path) + control_size, "unknown", None, str(e))
    with contextlib.closing(segment):
        locked = segment.lock_held()
        size = segment.nbytes + control_size
        look = _read_ring(segment)
    if look.data_file is not None:
        size = look.file_size + control_size
    header, problem = look.header, look.problem
    if header is None:
        if look.kind == "unready":
            if locked:
                return TopicInfo(topic, path, size, "starting", True, data_file=look.data_file)
            problem = "never initialised: its creator died while creating it"
            return TopicInfo(topic, path, size, "dead", False, problem, data_file=look.data_file)
        state = "unknown" if look.kind == "foreign" else ("alive" if locked else "dead")
        return TopicInfo(topic, path, size, state, locked, problem, data_file=look.data_file)
    return _describe(topic, path, look, locked, details, size)


def _describe(
    topic: str, path: str, look: _Look, locked: bool, details: bool, size: int | None = None
) -> TopicInfo:
    """A topic whose header validated, with its control segment's view of its subscribers."""
    header = look.header
    assert header is not None
    problem: str | None = None
    subscribers: list[SubscriberInfo] | None = None
    probe_sockets = False
    socket_dir = ""
    max_subscribers: int | None = None
    control_size = 0
    try:
        with _mapped_control(topic, writable=False) as control:
            if control.epoch != header.epoch:
                if look.data_file is None:
                    problem = "its control segment belongs to an earlier incarnation of the topic"
            else:
                subscribers = control.entries()
                socket_dir = control.socket_dir
                probe_sockets = wakeup.unshared_socket_dir(control) is None
                max_subscribers = control.max_subscribers
                control_size = _file_size(_path(topic, CONTROL_SUFFIX))
    except TopicNotFound:
        # A closing publisher removes its control segment first; a ring file outlives its own.
        if not header.closed and look.data_file is None:
            problem = "its control segment is missing"
    except PermissionDenied:
        problem = f"its control segment is not readable by us ({_owner(_path(topic, CONTROL_SUFFIX))})"
    except InvalidSegment as e:
        problem = str(e)

    statuses: tuple[SubscriberStatus, ...] | None = None
    if details and subscribers is not None:
        statuses = tuple(
            _status(entry, header.write_seq, socket_dir if probe_sockets else None) for entry in subscribers
        )
    return TopicInfo(
        topic,
        path,
        look.file_size + control_size if size is None else size,
        "closed" if header.closed else ("alive" if locked else "dead"),
        locked,
        problem,
        slots=header.slot_count,
        slot_size=header.slot_size,
        publisher_pid=header.publisher_pid,
        subscribers=None if subscribers is None else len(subscribers),
        max_subscribers=max_subscribers,
        published=header.write_seq,
        closed=header.closed,
        epoch=header.epoch,
        created_ns=header.created_ns,
        layout_version=header.layout_version,
        subscriber_details=statuses,
        data_file=look.data_file,
        flushed=None if look.file_header is None else look.file_header.flushed,
    )


def _inspect_orphan(topic: str) -> TopicInfo:
    """A control segment found without its data segment."""
    path = _path(topic, CONTROL_SUFFIX)
    try:
        segment = Segment.open(topic, suffix=CONTROL_SUFFIX)
    except PermissionDenied:
        return TopicInfo(
            topic, path, _file_size(path), "unknown", None, f"not readable by us ({_owner(path)})"
        )
    except InvalidSegment as e:
        return TopicInfo(topic, path, _file_size(path), "unknown", None, str(e))
    with contextlib.closing(segment):
        foreign = _foreign_control(segment)
    if foreign:
        return TopicInfo(topic, path, _file_size(path), "unknown", None, foreign)
    problem = "control segment without a data segment (garbage: `shmpubsub gc` removes it)"
    return TopicInfo(topic, path, _file_size(path), "dead", False, problem)


def _foreign_control(segment: Segment) -> str | None:
    """Why a control segment is not ours, or None if it is (even unfinished or corrupt)."""
    if segment.nbytes == 0:
        return None
    with segment.mapped() as (base, size):
        try:
            Control(base, size, "the control segment")
        except ForeignSegment as e:
            return str(e)
        except InvalidSegment:
            pass  # ours, but unfinished or corrupt
    return None


def _status(entry: SubscriberInfo, write_seq: int, socket_dir: str | None) -> SubscriberStatus:
    # pid 0: an entry claimed an instant ago, its pid not yet written; count it alive. A pid
    # that names no live process here may be another PID namespace's: a subscriber whose
    # wake-up socket something is bound to lives all the same, and where its socket cannot be
    # probed from here (*socket_dir* None), it is not judged dead.
    alive = (
        entry.pid == 0
        or _proc.is_alive(entry.pid, entry.start_time)
        or socket_dir is None
        or wakeup.socket_alive(os.path.join(socket_dir, socket_name(entry.token)))
    )
    lag = max(0, write_seq - entry.read_pos)
    return SubscriberStatus(entry.index, entry.pid, alive, entry.read_pos, lag, entry.lost, entry.asleep)


def _dead_entries(
    control: Control, left_by: tuple[int, int] | None = None
) -> list[SubscriberInfo]:
    """Entries whose process is gone (the criterion of wakeup.reap_dead_entries); with
    *left_by*, only those of that (pid, start time)."""
    return [
        e
        for e in control.entries()
        if e.pid > 0
        and not _proc.is_alive(e.pid, e.start_time)
        and (left_by is None or (e.pid, e.start_time) == left_by)
    ]


# -- cleaning up ------------------------------------------------------------------------


@dataclass
class _Verdict:
    kind: str  # "removable", "unready" or "keep"
    segment: Segment  # open read-only; the caller closes it
    reason: str = ""
    publisher: tuple[int, int] | None = None  # (pid, start time) from a readable header


def _judge(topic: str) -> _Verdict | tuple[str, int] | None:
    """What gc makes of a data segment: (topic, epoch) for a live topic whose subscribers it may
    reap, a verdict, or None (gone, or not ours to judge)."""
    path = _path(topic)
    try:
        segment = Segment.open(topic)
    except TopicNotFound:
        return None
    except PermissionDenied:
        log.info("%s: not readable by us (%s); left alone", path, _owner(path))
        return None
    except InvalidSegment as e:
        log.warning("%s: %s; left alone", path, e)
        return None
    try:
        locked = segment.lock_held()
        kind, header, problem = _read_header(segment)
    except BaseException:
        segment.close()
        raise
    if kind == "foreign":
        log.warning("%s: %s; left alone", path, problem)
        return _Verdict("keep", segment)
    if locked:
        segment.close()
        return None if header is None or header.closed else (topic, header.epoch)
    if kind == "unready":
        return _Verdict("unready", segment)
    publisher = None if header is None else (header.publisher_pid, header.publisher_start_time)
    return _Verdict("removable", segment, _reason(kind, header, problem), publisher)


def _dead_after_grace(segment: Segment) -> str | None:
    """Why a data segment found unlocked and uninitialised is garbage, once a publisher's
    start-up grace has passed, or None if it is not (any more). A creator holds its new segment
    unlocked for microseconds (between shm_open and fcntl): one still unlocked and
    uninitialised after the grace belongs to a dead creator."""
    if segment.lock_held() or not segment.still_named():
        return None
    kind, header, problem = _read_header(segment)
    return None if kind == "foreign" else _reason(kind, header, problem)


def _reason(kind: str, header: HeaderInfo | None, problem: str | None) -> str:
    """Why a data segment nobody holds is garbage."""
    if kind == "unready":
        return "never initialised: its creator died while creating it"
    if header is None:
        return f"{problem}; no publisher holds it"
    return f"its publisher, pid {header.publisher_pid}, is gone"


def _may_remove(path: str) -> bool:
    """True if we may unlink *path* (/dev/shm is sticky: only the file's owner may); logs why not."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if st.st_uid == os.geteuid() or os.geteuid() == 0:
        return True
    log.info("%s: not ours to remove (%s); left alone", path, _owner(path))
    return False


def _unlink(segment: Segment) -> bool:
    """Removes *segment*'s name if it still names this very segment; True if it did."""
    if not segment.still_named():
        return False
    try:
        segment.remove()
    except posix_ipc.PermissionsError:
        log.warning("%s: may not remove it; left alone", segment.path)
        return False
    return True


def _same_object(a: Segment, b: Segment) -> bool:
    sa, sb = os.fstat(a.fileno()), os.fstat(b.fileno())
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _remove_topic(
    topic: str, probed: Segment, reason: str, dry_run: bool, socket_dirs: set[str]
) -> list[str]:
    """Removes a dead topic's segments; *probed* is its data segment, found unlocked."""
    data_path, control_path = _path(topic), _path(topic, CONTROL_SUFFIX)
    if not _may_remove(data_path):
        return []
    # Where its subscribers' sockets are:
    with contextlib.suppress(ShmPubSubError), _mapped_control(topic, writable=False) as mapped:
        socket_dirs.add(mapped.socket_dir)
    if dry_run:
        found = [f"{data_path} (topic {topic!r}: {reason})"]
        if os.path.lexists(control_path):
            found.append(f"{control_path} (control segment of topic {topic!r})")
        return found
    try:
        owner = Segment.open(topic, writable=True)
    except TopicNotFound:
        return []
    except PermissionDenied:
        log.warning("%s: may not remove it (%s); left alone", data_path, _owner(data_path))
        return []
    except InvalidSegment:
        return []  # replaced by something else meanwhile
    removed: list[str] = []
    with contextlib.closing(owner):
        # Holding the lock, nobody can re-create the topic (a new publisher finds it taken), so
        # the names below are still the dead topic's. A failed lock: someone is taking it over.
        if not _same_object(owner, probed) or not owner.lock():
            return []
        with contextlib.suppress(TopicNotFound, PermissionDenied, InvalidSegment):
            control = Segment.open(topic, suffix=CONTROL_SUFFIX)
            with contextlib.closing(control):
                if _unlink(control):
                    removed.append(f"{control_path} (control segment of topic {topic!r})")
        if _unlink(owner):
            removed.insert(0, f"{data_path} (topic {topic!r}: {reason})")
    return removed


def _remove_orphan_control(topic: str, dry_run: bool) -> list[str]:
    path = _path(topic, CONTROL_SUFFIX)
    if not _may_remove(path):
        return []
    try:
        control = Segment.open(topic, suffix=CONTROL_SUFFIX)
    except (TopicNotFound, PermissionDenied, InvalidSegment):
        return []
    with contextlib.closing(control):
        # Looked at after opening: a publisher creates its data segment before its control
        # segment, so if there is still no data segment now, this control segment is no new one.
        if os.path.lexists(_path(topic)) or not control.still_named():
            return []
        foreign = _foreign_control(control)
        if foreign:
            log.warning("%s: %s; left alone", path, foreign)
            return []
        if not dry_run and not _unlink(control):
            return []
    return [f"{path} (control segment without a data segment)"]


def _reap(
    topic: str,
    epoch: int | None,
    dry_run: bool,
    socket_dirs: set[str],
    reaped: set[str],
    left_by: tuple[int, int] | None = None,
) -> list[str]:
    """Frees the entries (and sockets) of a topic's dead subscribers (with *left_by*, only
    those of that process). With an *epoch*, only in that incarnation of the topic."""
    path = _path(topic, CONTROL_SUFFIX)
    found: list[str] = []
    try:
        with _mapped_control(topic, writable=not dry_run) as control:
            if epoch is not None and control.epoch != epoch:
                return []  # re-created since we looked: the next run will see it
            unshared = wakeup.unshared_socket_dir(control)
            if unshared is not None:  # its subscribers' sockets cannot be probed from here
                log.info("%s: %s; its subscribers were not checked", path, unshared)
                return []
            socket_dirs.add(control.socket_dir)
            for entry in _dead_entries(control, left_by):
                sock = os.path.join(control.socket_dir, socket_name(entry.token))
                if wakeup.socket_alive(sock):
                    continue  # something is bound to its socket: it lives, whatever its pid says
                if not dry_run and not wakeup.reclaim(control, entry):
                    continue  # freed meanwhile, or its socket came alive
                reaped.add(sock)
                found.append(
                    f"{path} entry {entry.index} (subscriber pid {entry.pid} is gone; socket {sock})"
                )
    except PermissionDenied:
        log.info("%s: may not write it (%s); its subscribers were not checked", path, _owner(path))
    except (TopicNotFound, InvalidSegment):
        pass  # closed meanwhile, or not ours to fix
    return found


def _sweep_socket_dirs(socket_dirs: set[str], dry_run: bool, reaped: set[str]) -> list[str]:
    """Sweeps *socket_dirs* and our own socket directory (see _sweep_sockets)."""
    try:
        socket_dirs.add(wakeup.socket_dir())
    except (PermissionDenied, OSError) as e:
        log.warning("cannot sweep the socket directory: %s", e)
    removed: list[str] = []
    for directory in sorted(socket_dirs):
        removed += _sweep_sockets(directory, dry_run, reaped)
    return removed


def _sweep_sockets(directory: str, dry_run: bool, reaped: set[str]) -> list[str]:
    """Removes sockets with our prefix in *directory* that nobody is bound to, if the
    directory is private to us."""
    try:
        wakeup.check_private_dir(directory)
        swept = wakeup.sweep_dead_sockets(directory, dry_run=dry_run, skip=reaped)
    except FileNotFoundError:
        return []
    except (PermissionDenied, OSError) as e:
        log.warning("socket directory %s left alone: %s", directory, e)
        return []
    return [f"{path} (socket nobody is bound to)" for path in swept]
