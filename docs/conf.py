"""Sphinx configuration of the API reference (``python docs/build.py`` builds and checks it).

Every object is documented by its public path (``shmpubsub.Publisher``), whatever module
defines it: the reference does not depend on how the package is laid out inside.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.ext.napoleon import Config as NapoleonConfig
from sphinx.ext.napoleon.docstring import GoogleDocstring
from sphinx.util import logging

import shmpubsub

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build  # docs/build.py: what the public API is

project = "shmpubsub"
author = "the shmpubsub authors"
copyright = "the shmpubsub authors"  # the name Sphinx reads
release = shmpubsub.__version__
version = release

extensions = ["sphinx.ext.autodoc"]
root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
# The Markdown pages in docs/ are read on GitHub as they are; only the reference is built.
exclude_patterns = ["_build", "*.md", "img", "*.json"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
# Bases are shown where they say something: for the errors and for aio.Publisher.
autodoc_default_options = {"members": True}
# Docstrings are reStructuredText, but for the "Attributes:" sections of classes, which
# napoleon turns into attribute entries (see _attributes_sections).
_NAPOLEON = NapoleonConfig(napoleon_numpy_docstring=False, napoleon_use_ivar=False)

html_theme = "alabaster"
html_title = f"shmpubsub {release} API reference"
html_show_sourcelink = False

_log = logging.getLogger(__name__)
_PUBLIC_OBJECTS = build.public_objects()
_PUBLIC_PATH = {id(obj): path for path, obj in _PUBLIC_OBJECTS.items()}
_PUBLIC_NAMES = frozenset(path.rsplit(".", 1)[1] for path in _PUBLIC_OBJECTS)


def _attributes_sections(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """napoleon for the docstrings of classes only: loaded as an extension it would also read
    the first line of every property's docstring as "type: description" where it has a colon."""
    if what in ("class", "exception"):
        lines[:] = GoogleDocstring(lines, _NAPOLEON, app, what, name, obj, options).lines()


def _public_bases(app: Sphinx, name: str, obj: type, options: Any, bases: list[type]) -> None:
    """ "Bases:" names public classes only (not the private helpers a class is built on)."""
    bases[:] = [base for base in bases if not any(part.startswith("_") for part in _path_of(base).split("."))]


def _path_of(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _package_names(app: Sphinx, doctree: nodes.document) -> None:
    """A bare class name in a docstring's type or a type hint (``Publisher | None`` in
    ``shmpubsub.bridge``) means what that module calls so, or for a name it imports only for
    type checking, the package's own: point it at that object's public path."""
    for ref in doctree.findall(addnodes.pending_xref):
        target = ref.get("reftarget", "")
        module = ref.get("py:module") or ""
        if ref.get("refdomain") != "py" or target not in _PUBLIC_NAMES or not module.startswith("shmpubsub"):
            continue
        obj = getattr(importlib.import_module(module), target, None)
        public = _PUBLIC_PATH.get(id(obj)) if obj is not None else f"shmpubsub.{target}"
        if public is not None:
            ref["reftarget"] = public


def _missing_reference(app: Sphinx, env: Any, node: addnodes.pending_xref, contnode: nodes.Node) -> None:
    """Not nitpicky about builtins and third-party types, but a reference meant for one of
    ours that resolves to nothing (undocumented, or misspelt) is an error."""
    if node.get("refdomain") != "py":
        return
    target = node.get("reftarget", "").lstrip("~.")
    if target.startswith("shmpubsub") or target.rsplit(".", 1)[-1] in _PUBLIC_NAMES:
        _log.warning("unresolved reference to %r", target, location=node)


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-docstring", _attributes_sections)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("doctree-read", _package_names)
    app.connect("missing-reference", _missing_reference)
