"""Model workers: generations run in processes of their own, never in the server.

- :mod:`~tokenwire.workers.messages`: the gateway <-> worker message set (sans-I/O);
- :mod:`~tokenwire.workers.worker`: the worker process (``python -m tokenwire.workers``);
- :mod:`~tokenwire.workers.process`: one worker process, seen from the gateway;
- :mod:`~tokenwire.workers.pool`: a model's workers, its wait queue and restart policy;
- :mod:`~tokenwire.workers.backend`: ``WorkerBackend``, the ModelBackend over a pool.

docs/workers.md tells the whole story.
"""

from tokenwire.workers.backend import WorkerBackend
from tokenwire.workers.pool import RestartPolicy, WorkerPool
from tokenwire.workers.process import WorkerProcess, WorkerSpec, WorkerState

__all__ = [
    "RestartPolicy",
    "WorkerBackend",
    "WorkerPool",
    "WorkerProcess",
    "WorkerSpec",
    "WorkerState",
]
