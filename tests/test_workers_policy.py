"""The pure parts of the worker pool: restart backoff and how a worker's end is told."""

from __future__ import annotations

import signal

from tokenwire.workers.pool import RestartPolicy
from tokenwire.workers.process import WorkerSpec, describe_exit


def test_backoff_doubles_with_recent_crashes_up_to_its_cap() -> None:
    policy = RestartPolicy(backoff_s=0.1, max_backoff_s=1.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.delay(0) == 0.1


def test_an_exit_names_the_signal_or_the_status() -> None:
    assert describe_exit(-signal.SIGKILL) == "was killed by signal SIGKILL (Killed)"
    assert describe_exit(-signal.SIGSEGV).startswith("was killed by signal SIGSEGV (Segm")
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(None) == "is still running"
    assert describe_exit(-200) == "was killed by signal 200"


def test_the_worker_command_carries_name_url_and_settings_as_json() -> None:
    spec = WorkerSpec("m", "llamacpp:?n_ctx=64", {"n_threads": 2})
    cmd = spec.command()
    assert cmd[1:3] == ["-m", "tokenwire.workers"]
    assert cmd[3:] == [
        "--name",
        "m",
        "--url",
        "llamacpp:?n_ctx=64",
        "--settings",
        '{"n_threads": 2}',
    ]
