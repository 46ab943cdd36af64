# Only job: wire the cffi extension into the build. Metadata lives in pyproject.toml.
import cffi  # noqa: F401  (a build without cffi must fail here, loudly)
from setuptools import setup

# force: the compiler flags depend on the environment (SHMPUBSUB_SANITIZE, SHMPUBSUB_WERROR),
# which setuptools' up-to-date check does not see; a stale build/ must never be reused.
setup(cffi_modules=["build_ffi.py:ffibuilder"], options={"build_ext": {"force": True}})
