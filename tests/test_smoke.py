"""The compiled core is there, and agrees with the Python package on the layout version."""

from shmpubsub._core.header import HEADER_SIZE, geometry
from shmpubsub._core.lib import LAYOUT_VERSION
from shmpubsub._ffi import lib


def test_extension_imports_and_agrees_on_layout_version() -> None:
    assert lib.SPS_LAYOUT_VERSION == LAYOUT_VERSION


def test_geometry_comes_from_c() -> None:
    stride, total = geometry(8, 100)
    assert stride % 64 == 0 and stride >= 100 + 16
    assert total == HEADER_SIZE + 8 * stride
