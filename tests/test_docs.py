"""Every code block of README.md and docs/*.md runs as written, and the API reference check works.

The fenced blocks tagged ``python``, ``sh``, ``bash`` or ``console`` are run, each in a fresh
process (Python blocks with this interpreter, shell blocks with ``bash -e -o pipefail``), in a
temporary directory, with a private SHMPUBSUB_RUNTIME_DIR and this environment's scripts first
on PATH. Untagged blocks (and ``text``) are diagrams, never run. An HTML comment on the line
just before a block says how to run it, visibly, in the document itself:

``<!-- snippet: with-publisher TOPIC [path=FILE] [array=480x640x3:uint8] [closes-after=S] -->``
    A publisher of TOPIC runs in another process while the block runs, publishing a message
    every 10 ms (numpy arrays of that shape and dtype with ``array=``; into a ring file with
    ``path=``). It closes when the block has ended, or with ``closes-after`` S seconds after
    the block's first subscriber attached (for blocks that wait for the end of the stream).
``<!-- snippet: not-run: REASON -->``
    The block is not run (it installs, or runs until Ctrl-C): it is only checked (Python
    compiles; the shell parses, the scripts it names exist, each ``shmpubsub`` subcommand
    answers ``--help``). Every such block is listed in NOT_RUN below.

The blocks of MEASUREMENTS are measurements that take minutes: checked like ``not-run`` ones.
Topic names are given a suffix unique to the run (``prices`` -> ``prices-d1234-5``, also inside
file names), so that runs on one machine never meet; nothing else of a block is changed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]

#: The blocks that are not run, by document and first line (its comment left out). Each is
#: marked "not-run" in its document with the reason; a marker missing here, or an entry with
#: no marked block, fails the test: skipping stays deliberate, and rare.
NOT_RUN = {
    ("README.md", "python3 -m venv .venv && . .venv/bin/activate && pip install . && shmpubsub demo"),
    ("README.md", "pip install '.[test]' && python -m pytest"),
    ("README.md", "shmpubsub tail prices"),
    ("README.md", "shmpubsub bridge out prices --bind tcp://0.0.0.0:5555"),
    ("README.md", "shmpubsub bridge in prices --connect tcp://pubhost:5555 --as prices-remote"),
    ("README.md", "from shmpubsub.bridge import BridgeIn, BridgeOut, SupervisedBridge"),
    ("docs/reliability.md", "python tests/soak.py --rounds 300 --seed 7"),
    ("docs/containers.md", "sudo install -d -m 0700 -o 1000 -g 1000 /srv/shmpubsub"),
}
#: Documents whose blocks are measurements taking minutes: checked, never run.
MEASUREMENTS = {"docs/benchmarks.md"}

# Untagged, text and yaml blocks are diagrams and configuration: shown, never run.
LANGUAGES = {
    "python": "python", "sh": "sh", "bash": "sh", "console": "sh", "": None, "text": None, "yaml": None
}
MARKER = re.compile(r"<!--\s*snippet:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\S*)\s*$")
TIMEOUT = 60.0


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # of the opening fence, 1-based
    language: str | None
    tag: str
    code: str
    marker: str | None

    @property
    def first_line(self) -> str:
        first = next((line for line in self.code.splitlines() if line.strip()), "")
        if self.language == "sh":
            first = first.split("#", 1)[0]
        return first.strip()

    @property
    def not_run(self) -> bool:
        return self.doc in MEASUREMENTS or (self.marker or "").startswith("not-run:")

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def parse(doc: str, text: str) -> list[Block]:
    """The fenced blocks of a Markdown document, with the marker just before each."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        assert end is not None, f"{doc}:{i + 1}: a code block is never closed"
        marker = MARKER.match(lines[i - 1].strip()) if i > 0 else None
        tag = opening.group(1)
        blocks.append(
            Block(
                doc,
                i + 1,
                LANGUAGES.get(tag, "unknown"),
                tag,
                "\n".join(lines[i + 1 : end]) + "\n",
                marker.group(1) if marker else None,
            )
        )
        i = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for doc in DOCUMENTS for block in parse(doc, (ROOT / doc).read_text())]


BLOCKS = all_blocks()
CODE_BLOCKS = [block for block in BLOCKS if block.language is not None]


# -- the conventions themselves ------------------------------------------------------------------


def test_every_block_is_code_of_a_known_language_or_a_diagram() -> None:
    unknown = [f"{b}: ```{b.tag}" for b in BLOCKS if b.language == "unknown"]
    assert not unknown, f"tag these blocks python, sh or console (or leave diagrams untagged): {unknown}"


def test_markers_are_known_and_sit_on_code_blocks() -> None:
    for block in BLOCKS:
        if block.marker is None:
            continue
        assert block.language not in (None, "unknown"), (
            f"{block}: a snippet marker on a block that is not code"
        )
        assert block.marker.startswith(("with-publisher ", "not-run: ")), (
            f"{block}: unknown marker {block.marker!r}"
        )
        if block.marker.startswith("not-run: "):
            assert block.marker[len("not-run: ") :].strip(), f"{block}: a not-run marker must say why"


def test_the_blocks_not_run_are_exactly_those_listed() -> None:
    marked = {(b.doc, b.first_line) for b in CODE_BLOCKS if b.not_run and b.doc not in MEASUREMENTS}
    assert marked - NOT_RUN == set(), "marked not-run but not listed in NOT_RUN"
    assert NOT_RUN - marked == set(), "listed in NOT_RUN but no such block is marked not-run"


def test_the_conventions_are_applied_as_documented() -> None:
    text = textwrap.dedent(
        """\
        ```python
        print(1)
        ```
        <!-- snippet: with-publisher prices path=p.ring closes-after=2 -->
        ```sh
        shmpubsub ls   # all
        ```
        ```
        a diagram
        ```
        """
    )
    first, second, third = parse("x.md", text)
    assert (first.language, first.marker, first.line, first.code) == ("python", None, 1, "print(1)\n")
    assert (second.language, second.marker, second.first_line) == (
        "sh",
        "with-publisher prices path=p.ring closes-after=2",
        "shmpubsub ls",
    )
    assert third.language is None
    options = publisher_options(second)
    assert options == {"topic": "prices", "path": "p.ring", "closes-after": "2"}


# -- running -------------------------------------------------------------------------------------


def publisher_options(block: Block) -> dict[str, str]:
    words = (block.marker or "").split()
    assert len(words) >= 2 and words[0] == "with-publisher", f"{block}: with-publisher TOPIC [options]"
    options = {"topic": words[1]}
    for word in words[2:]:
        key, sep, value = word.partition("=")
        assert sep and key in ("path", "array", "closes-after"), f"{block}: unknown option {word!r}"
        options[key] = value
    return options


def topic_names() -> list[str]:
    """Every topic name the runnable blocks use, longest first."""
    names: set[str] = set()
    quoted = re.compile(r'(?:Publisher|Subscriber|BridgeIn|BridgeOut)\(\s*"([\w.-]+)"|local_name="([\w.-]+)"')
    for block in CODE_BLOCKS:
        if block.not_run:
            continue
        names.update(name for match in quoted.findall(block.code) for name in match if name)
        if block.marker and block.marker.startswith("with-publisher"):
            names.add(publisher_options(block)["topic"])
    return sorted(names, key=len, reverse=True)


SUFFIX = f"d{os.getpid()}-{os.urandom(2).hex()}"
_NAMES = re.compile(r"\b(" + "|".join(map(re.escape, topic_names())) + r")\b")


def unique(text: str) -> str:
    return _NAMES.sub(lambda m: f"{m.group(1)}-{SUFFIX}", text)


def environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["SHMPUBSUB_RUNTIME_DIR"] = str(workdir / "run")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


PUBLISHER = """\
import sys, threading, time
import shmpubsub as sps

topic, path, array, closes_after = sys.argv[1], sys.argv[2] or None, sys.argv[3], float(sys.argv[4])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
slot_size, frame = 4096, None
if array:
    import numpy as np
    from shmpubsub import arrays

    shape, dtype = array.split(":")
    frame = np.zeros(tuple(int(n) for n in shape.split("x")), dtype=dtype)
    slot_size = arrays.message_size(frame.shape, frame.dtype)
with sps.Publisher(topic, slots=64, slot_size=slot_size, path=path) as pub:
    print("ready", flush=True)
    end = None  # the clock starts when the block's first subscriber has attached
    n = 0
    while not stop.wait(0.01) and (end is None or time.monotonic() < end):
        pub.publish_array(frame) if frame is not None else pub.publish(f"message {n}".encode())
        n += 1
        if end is None and pub.subscribers:
            end = time.monotonic() + closes_after
"""


@contextlib.contextmanager
def publisher(block: Block, workdir: Path, env: dict[str, str]) -> Iterator[None]:
    """The with-publisher marker's publisher, ready before the block starts."""
    options = publisher_options(block)
    args = [
        unique(options["topic"]),
        unique(options.get("path", "")),
        options.get("array", ""),
        options.get("closes-after", "3600"),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, *args],
        cwd=workdir,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n", proc.communicate(timeout=30)[
            1
        ]
        yield
    finally:
        try:
            _, err = proc.communicate(input="", timeout=30)  # closing its stdin closes it
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, f"{block}: the publisher failed:\n{err}"


def run(block: Block, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = workdir / ("snippet.py" if block.language == "python" else "snippet.sh")
    script.write_text(unique(block.code))
    command = (
        [sys.executable, str(script)]
        if block.language == "python"
        else ["bash", "-e", "-o", "pipefail", str(script)]
    )
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.mark.parametrize("block", [b for b in CODE_BLOCKS if not b.not_run], ids=str)
def test_block_runs_as_written(block: Block) -> None:
    with tempfile.TemporaryDirectory(prefix="sps-docs-") as tmp:
        workdir = Path(tmp)
        env = environment(workdir)
        with publisher(block, workdir, env) if block.marker else contextlib.nullcontext():
            result = run(block, workdir, env)
        assert result.returncode == 0, (
            f"{block} exited with {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


# -- checking what is not run --------------------------------------------------------------------


def commands(code: str) -> Iterator[list[str]]:
    """The simple commands of a shell block, as words (environment assignments left out)."""
    logical = code.replace("\\\n", " ")
    for line in logical.splitlines():
        for part in re.split(r"&&|\|\||;|\|", line.split(" #", 1)[0] if not line.startswith("#") else ""):
            words = shlex.split(part, comments=True)
            while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
                words.pop(0)
            if words:
                yield words


def files_and_subcommands(code: str) -> tuple[list[str], list[str]]:
    """The repository files a shell block runs (``python X.py``, ``python -m pytest X``) and the
    ``shmpubsub`` subcommands it calls."""
    files: list[str] = []
    subcommands: list[str] = []
    for words in commands(code):
        if words[0] in ("python", "python3"):
            args = words[1:]
            if args[:2] == ["-m", "shmpubsub"]:
                words = ["shmpubsub", *args[2:]]
            elif args[:2] == ["-m", "pytest"]:
                files += [a.split("::")[0] for a in args[2:] if not a.startswith("-") and "/" in a]
            elif args and args[0].endswith(".py"):
                files.append(args[0])
        if words[0] == "shmpubsub" and len(words) > 1 and not words[1].startswith("-"):
            subcommands.append(words[1])
    return files, subcommands


@pytest.mark.parametrize("block", [b for b in CODE_BLOCKS if b.not_run], ids=str)
def test_block_not_run_is_still_valid(block: Block) -> None:
    if block.language == "python":
        compile(block.code, str(block), "exec")
        return
    syntax = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
    assert syntax.returncode == 0, f"{block}: {syntax.stderr}"
    files, subcommands = files_and_subcommands(block.code)
    missing = [f for f in files if not (ROOT / f).exists()]
    assert not missing, f"{block} runs files that do not exist: {missing}"
    for sub in dict.fromkeys(subcommands):
        helped = subprocess.run(
            [sys.executable, "-m", "shmpubsub", sub, "--help"], capture_output=True, text=True, timeout=60
        )
        assert helped.returncode == 0, f"{block}: shmpubsub {sub} --help: {helped.stderr}"


def test_the_dry_check_finds_what_a_block_runs() -> None:
    code = textwrap.dedent(
        """\
        uptime    # a comment
        CFLAGS=-DX pip install -e .
        python benchmarks/hop.py --budget 1 && python -m pytest benchmarks/test_core.py -k x
        python -m shmpubsub bench -- --only shmpubsub \\
            --sizes 64
        shmpubsub tail -n 10 prices | head
        """
    )
    assert files_and_subcommands(code) == (
        ["benchmarks/hop.py", "benchmarks/test_core.py"],
        ["bench", "tail"],
    )


# -- links between the documents ----------------------------------------------------------------


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            base = slug(line.lstrip("#"))
            name, n = base, 0
            while name in found:  # repeated headings get -1, -2, ...
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def test_slugs_are_githubs() -> None:
    assert slug(" Fan-out 1→4") == "fan-out-14"
    assert (
        slug("Streaming stores for large messages, on and off")
        == "streaming-stores-for-large-messages-on-and-off"
    )
    assert slug("`shmpubsub.aio`: asyncio") == "shmpubsubaio-asyncio"


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_links_between_documents_resolve(doc: str) -> None:
    """A link to another document of the repository (or a section of it) finds its target."""
    source = ROOT / doc
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", source.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        file, _, fragment = target.partition("#")
        path = (source.parent / file).resolve() if file else source
        if not path.exists() or (fragment and path.suffix == ".md" and fragment not in anchors(path)):
            broken.append(target)
    assert not broken, f"{doc}: links to nothing: {broken}"


# -- the API reference's completeness check (docs/build.py) --------------------------------------


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_build", ROOT / "docs" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_check_knows_every_public_member() -> None:
    build = load_build()
    expected = build.expected_entries(build.live_instance_attributes())
    for entry in (
        "shmpubsub.Publisher",
        "shmpubsub.Publisher.topic",
        "shmpubsub.Publisher.wakeup_failures",
        "shmpubsub.Subscriber.pending",
        "shmpubsub.Subscriber.next_seq",
        "shmpubsub.Subscriber.publisher_closed",
        "shmpubsub.Subscriber.header",
        "shmpubsub.Batch.seqs",
        "shmpubsub.Message.data",
        "shmpubsub.View.seq",
        "shmpubsub.Loan.seq",
        "shmpubsub.SubscriberInfo.pid",
        "shmpubsub.Recovery.corrupt",
        "shmpubsub.PublisherGone.reason",
        "shmpubsub.aio.Subscriber.receive",
        "shmpubsub.admin.topic_info",
        "shmpubsub.admin.TopicInfo.state",
        "shmpubsub.arrays.message_size",
        "shmpubsub.bridge.SupervisedBridge.stop",
        "shmpubsub.__version__",
    ):
        assert entry in expected, entry
    # What aio.Publisher inherits may be documented on shmpubsub.Publisher.
    assert "shmpubsub.Publisher.publish" in expected["shmpubsub.aio.Publisher.publish"]
    private = [
        entry
        for entry in expected
        if entry != "shmpubsub.__version__" and any(part.startswith("_") for part in entry.split("."))
    ]
    assert not private, "private names are expected in the reference"


def test_the_reference_check_fails_on_a_missing_member(tmp_path: Path) -> None:
    build = load_build()
    expected = {
        "shmpubsub.Subscriber.pending": ["shmpubsub.Subscriber.pending"],
        "shmpubsub.X": ["shmpubsub.X"],
    }
    inventory = tmp_path / "objects.inv"
    body = "shmpubsub.X py:class 1 api.html#$ -\nshmpubsub.Subscriber.lost py:property 1 api.html#$ -\n"
    header = (
        b"# Sphinx inventory version 2\n# Project: x\n# Version: 0\n# The remainder is zlib-compressed.\n"
    )
    inventory.write_bytes(header + zlib.compress(body.encode()))
    names = build.read_inventory(inventory)
    assert names == {"shmpubsub.X", "shmpubsub.Subscriber.lost"}
    assert build.missing(names, expected) == ["shmpubsub.Subscriber.pending"]
