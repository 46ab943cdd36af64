from collections.abc import Callable
from typing import Any

RELEASE_GIL_FROM: int

def bind(
    publish: int,
    take: int,
    take_wait: int,
    take_many: int,
    sleep_take: int,
    view_begin: int,
    view_end: int,
    /,
) -> None: ...

class Publish:
    def __init__(self, owner: Any, address: int, slow: Callable[[int | None, Any], int], /) -> None: ...
    def __call__(self, data: Any) -> int: ...

class Take:
    def __init__(
        self,
        owner: Any,
        address: int,
        result: type | None,
        slow: Callable[[int], Any],
        mode: str,
        mapping: memoryview = ...,
        /,
    ) -> None: ...
    def __call__(self, *count: int) -> Any: ...
