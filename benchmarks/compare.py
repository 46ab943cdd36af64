"""The peer comparison: shmpubsub side by side with multiprocessing, sockets, pyzmq, faster-fifo
and iceoryx2 (the harness is the package next to this file, benchmarks/peers/).

    pip install '.[bench]'
    python benchmarks/compare.py [--quick] [--sizes 64,4K,64K,1M] [--out DIR] [--only KEY,...]
    python benchmarks/compare.py --replot docs/benchmarks-compare.json   # redraw the plots only

Writes into this checkout's docs/ unless --out says otherwise; see docs/benchmarks.md.
"""

import sys

from peers import cli

if __name__ == "__main__":
    sys.exit(cli.main())
