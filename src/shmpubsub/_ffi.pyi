# The compiled cffi module; its declarations live in csrc/shmpubsub.h (the CDEF region).
from typing import Any

ffi: Any
lib: Any
