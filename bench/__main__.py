"""``python -m bench``: the SSE fan-out benchmark (see :mod:`bench.sse_fanout`)."""

import sys

from bench.sse_fanout import main

sys.exit(main())
