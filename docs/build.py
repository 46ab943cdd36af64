"""Builds the API reference with warnings as errors, then checks that it documents the whole
public API: every name in ``shmpubsub.__all__`` and in the public modules, and every public
method, property and attribute of their classes (instance attributes included, found on live
objects), each under its public path.

    pip install -e '.[docs]'
    python docs/build.py            # builds from scratch into docs/_build/html; exit status 1 on any problem
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import os
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent

#: The public modules, and the names each one exports (None: its ``__all__``).
PUBLIC_MODULES: dict[str, list[str] | None] = {
    "shmpubsub": None,
    "shmpubsub.aio": ["Publisher", "Subscriber"],
    "shmpubsub.arrays": ["decode", "fill", "header_for", "is_array", "message_size", "prepare", "publish"],
    "shmpubsub.admin": None,
    "shmpubsub.bridge": ["BridgeError", "BridgeIn", "BridgeOut", "SupervisedBridge"],
}


def public_objects() -> dict[str, Any]:
    """Public path -> object, for every name the public modules export."""
    found: dict[str, Any] = {}
    for module_name, names in PUBLIC_MODULES.items():
        module = importlib.import_module(module_name)
        for name in names if names is not None else module.__all__:
            found[f"{module_name}.{name}"] = getattr(module, name)
    return found


def _ours(cls: type) -> bool:
    return cls.__module__.split(".")[0] == "shmpubsub"


def _members(cls: type, instance_attributes: set[str]) -> set[str]:
    """The public members of *cls* defined by shmpubsub's classes (not by ``object`` or a
    builtin exception): methods, properties, slots, dataclass fields, *instance_attributes*."""
    names = set(instance_attributes)
    for klass in cls.__mro__:
        if _ours(klass):
            names |= set(vars(klass))
            if dataclasses.is_dataclass(klass):
                names |= {field.name for field in dataclasses.fields(klass)}
    return {name for name in names if not name.startswith("_")}


def expected_entries(instance_attributes: dict[str, set[str]]) -> dict[str, list[str]]:
    """What the reference must contain: each entry -> the inventory names that satisfy it.

    *instance_attributes*: public path of a class -> attributes its instances carry."""
    objects = public_objects()
    public_path = {id(obj): path for path, obj in objects.items() if inspect.isclass(obj)}
    expected: dict[str, list[str]] = {}
    for path, obj in objects.items():
        expected[path] = [path]
        if not inspect.isclass(obj):
            continue
        # A public base class documents what it shares (shmpubsub.Publisher for aio.Publisher).
        bases = [public_path[id(base)] for base in obj.__mro__ if id(base) in public_path]
        for name in _members(obj, instance_attributes.get(path, set())):
            expected[f"{path}.{name}"] = [f"{base}.{name}" for base in bases]
    return expected


@contextlib.contextmanager
def _sample_objects() -> Iterator[dict[str, Any]]:
    """One live object of each class whose instances carry attributes set in ``__init__``."""
    import shmpubsub as sps
    from shmpubsub import aio

    topic = f"docs-check-{os.getpid()}"
    with contextlib.ExitStack() as stack:
        pub = stack.enter_context(sps.Publisher(topic, slots=8, slot_size=64))
        sub = stack.enter_context(sps.Subscriber(topic))
        loan = pub.loan(1)
        with loan as buf:
            buf[0] = 1
        view = sub.view(timeout=1.0)
        with view:
            pass
        pub.publish(b"x")
        samples: dict[str, Any] = {
            "shmpubsub.Publisher": pub,
            "shmpubsub.Subscriber": sub,
            "shmpubsub.Loan": loan,
            "shmpubsub.View": view,
            "shmpubsub.Message": sub.receive(timeout=1.0),
            "shmpubsub.Batch": sub.try_receive_many(),
            "shmpubsub.Segment": sps.Segment.open(topic),
            "shmpubsub.aio.Subscriber": aio.Subscriber(topic),
            "shmpubsub.PublisherGone": sps.PublisherGone(topic, "closed"),
            "shmpubsub.MessageOverwritten": sps.MessageOverwritten(topic, 0),
        }
        stack.callback(samples["shmpubsub.Segment"].close)
        stack.callback(samples["shmpubsub.aio.Subscriber"].close)
        with aio.Publisher(f"{topic}-aio", slots=8, slot_size=64) as aio_pub:
            samples["shmpubsub.aio.Publisher"] = aio_pub
            with contextlib.suppress(ImportError):  # pyzmq: installed with the docs extra
                from shmpubsub import bridge

                endpoint = f"ipc://{stack.enter_context(tempfile.TemporaryDirectory())}/bridge"
                samples["shmpubsub.bridge.BridgeOut"] = stack.enter_context(bridge.BridgeOut(topic, endpoint))
                samples["shmpubsub.bridge.BridgeIn"] = stack.enter_context(
                    bridge.BridgeIn(topic, endpoint, local_name=f"{topic}-in")
                )
            yield samples


def live_instance_attributes() -> dict[str, set[str]]:
    """Public path of a class -> the attributes its instances carry (``__dict__`` and slots)."""
    found: dict[str, set[str]] = {}
    with (
        tempfile.TemporaryDirectory() as runtime,
        _environment(SHMPUBSUB_RUNTIME_DIR=runtime + "/s"),
        _sample_objects() as samples,
    ):
        for path, obj in samples.items():
            names = set(getattr(obj, "__dict__", {}))
            for klass in type(obj).__mro__:
                names |= set(getattr(klass, "__slots__", ()))
            found[path] = {name for name in names if not name.startswith("_")}
    return found


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def read_inventory(path: Path) -> set[str]:
    """The Python object names in a Sphinx ``objects.inv`` (version 2)."""
    with open(path, "rb") as f:
        header = [f.readline() for _ in range(4)]
        if header[0].rstrip() != b"# Sphinx inventory version 2":
            raise ValueError(f"{path}: not a Sphinx inventory of version 2")
        lines = zlib.decompress(f.read()).decode().splitlines()
    names = set()
    for line in lines:
        name, role = line.split(" ", 2)[:2]
        if role.startswith("py:"):
            names.add(name)
    return names


def missing(inventory: set[str], expected: dict[str, list[str]]) -> list[str]:
    """The expected entries that no name in *inventory* satisfies."""
    return sorted(entry for entry, accepted in expected.items() if not inventory.intersection(accepted))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DOCS / "_build" / "html", help="output directory")
    args = parser.parse_args(argv)
    # --fresh-env: a warning is reported on every build, not only the one that read the file.
    sphinx = ["-W", "--keep-going", "--fresh-env", "-b", "html", str(DOCS), str(args.out)]
    command = [sys.executable, "-m", "sphinx", *sphinx]
    print(" ".join(command), flush=True)
    status = 0
    if subprocess.run(command).returncode != 0:
        print("docs/build.py: the reference does not build without warnings (see above)")
        status = 1
    inventory_file = args.out / "objects.inv"
    if not inventory_file.exists():
        return 1
    inventory = read_inventory(inventory_file)
    absent = missing(inventory, expected_entries(live_instance_attributes()))
    if absent:
        print("docs/build.py: the reference lacks these public names (give each a docstring, or a")
        print("'#:' comment or an 'Attributes:' entry for an attribute, and document it in docs/api/):")
        for name in absent:
            print(f"  {name}")
        return 1
    if status == 0:
        print(f"docs/build.py: the reference documents every public name; {args.out}/index.html")
    return status


if __name__ == "__main__":
    sys.exit(main())
