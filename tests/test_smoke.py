"""The compiled core is there, and agrees with the Python package on the layout version."""

from shmpubsub import _core
from shmpubsub._ffi import lib


def test_extension_imports_and_agrees_on_layout_version() -> None:
    assert lib.SPS_LAYOUT_VERSION == _core.LAYOUT_VERSION


def test_geometry_comes_from_c() -> None:
    stride, total = _core.geometry(8, 100)
    assert stride % 64 == 0 and stride >= 100 + 16
    assert total == _core.HEADER_SIZE + 8 * stride
