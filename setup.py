# Only job: wire the cffi extension into the build. Metadata lives in pyproject.toml.
import cffi  # noqa: F401  (a build without cffi must fail here, loudly)
from setuptools import setup

setup(cffi_modules=["build_ffi.py:ffibuilder"])
