"""The peer comparison (``shmpubsub bench``), writing into this checkout's docs/.

    pip install '.[bench]'
    python benchmarks/compare.py [--quick] [--sizes 64,4K,64K,1M] [--only KEY,...]

The harness itself is shmpubsub.bench, so that the spawned processes it measures import it
by name wherever it runs.
"""

import os
import sys

from shmpubsub import bench

if __name__ == "__main__":
    docs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs")
    sys.exit(bench.main(["--out", docs, *sys.argv[1:]]))
