"""``python bench/run.py``: the SSE fan-out benchmark, runnable without ``-m``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sse_fanout import main

if __name__ == "__main__":
    sys.exit(main())
