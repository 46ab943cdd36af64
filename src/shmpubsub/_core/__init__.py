"""The binding layer: typed wrappers over the compiled C core, one module per C unit.

``lib`` alone imports the compiled extensions (``_ffi``, built by cffi from ``csrc/``, and
``_fastpath``, the per-message calls). ``header``, ``control``, ``wake``, ``ring`` and ``file``
wrap ``csrc/header.c``, ``control.c``, ``wake.c``, ``ring.c`` and ``file.c``: each checks
arguments in Python, calls C, and turns status codes into exceptions from
:mod:`shmpubsub.errors`. Nothing outside this package touches ``ffi`` or ``lib``.
"""
