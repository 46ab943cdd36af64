# Only job: wire the two compiled modules into the build. Metadata lives in pyproject.toml.
import os
import sys

import cffi  # noqa: F401  (a build without cffi must fail here, loudly)
from setuptools import Extension, setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_ffi import compile_args  # the same flags for both modules

cflags, ldflags = compile_args()
fastpath = Extension(
    "shmpubsub._fastpath",
    sources=["src/shmpubsub/_fastpath.c"],
    include_dirs=["csrc"],
    depends=["csrc/shmpubsub.h", "csrc/layout.h"],
    extra_compile_args=cflags,
    extra_link_args=ldflags,
)

# force: the compiler flags depend on the environment (SHMPUBSUB_SANITIZE, SHMPUBSUB_WERROR),
# which setuptools' up-to-date check does not see; a stale build/ must never be reused.
setup(
    cffi_modules=["build_ffi.py:ffibuilder"],
    ext_modules=[fastpath],
    options={"build_ext": {"force": True}},
)
