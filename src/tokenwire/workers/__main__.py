import sys

from tokenwire.workers.worker import main

sys.exit(main())
