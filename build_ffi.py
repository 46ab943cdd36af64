"""Builds the C core into ``shmpubsub._ffi`` with cffi (out-of-line API mode).

The declarations handed to cffi are read from the marked region of
``csrc/shmpubsub.h``, so C and Python share one source of truth.

Environment knobs (for CI and debugging, not for users):
  SHMPUBSUB_SANITIZE=address,undefined   build with those sanitizers
  SHMPUBSUB_WERROR=1                     turn warnings into errors
"""

import os
import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
CSRC = "csrc"
SOURCES = [f"{CSRC}/{name}.c" for name in ("header", "ring", "control", "wake", "file", "checksum", "watch")]


def read_cdef() -> str:
    header = (HERE / CSRC / "shmpubsub.h").read_text()
    match = re.search(r"/\* CDEF BEGIN \*/(.*)/\* CDEF END \*/", header, re.S)
    if match is None:
        raise RuntimeError("csrc/shmpubsub.h has no CDEF BEGIN/END region")
    return match.group(1)


def compile_args() -> tuple[list[str], list[str]]:
    cflags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-fno-strict-aliasing"]
    ldflags: list[str] = []
    if os.environ.get("SHMPUBSUB_WERROR"):
        cflags.append("-Werror")
    sanitizers = os.environ.get("SHMPUBSUB_SANITIZE")
    if sanitizers:
        flags = [f"-fsanitize={sanitizers}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all", "-g"]
        cflags += flags
        ldflags += flags
    return cflags, ldflags


ffibuilder = FFI()
ffibuilder.cdef(read_cdef())
_cflags, _ldflags = compile_args()
ffibuilder.set_source(
    "shmpubsub._ffi",
    '#include "shmpubsub.h"',
    sources=SOURCES,
    include_dirs=[CSRC],
    depends=[f"{CSRC}/shmpubsub.h", f"{CSRC}/layout.h"],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir="build/ffi", verbose=True)
