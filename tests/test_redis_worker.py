"""Model workers over Redis (issue 14): pure gateways (``--model-workers 0``) queue
generation jobs, ``tokenwire worker`` processes claim them, and each stream lives in
Redis, so it outlives the gateway that took the request; a worker killed mid-stream
ends its stream with ``error worker_lost``. Real redis-server, real processes, httpx."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import httpx
import pytest

from tests.conftest import ServerFactory, ServerProcess
from tests.redis_fixture import RedisServer

SCRIPTED = "Streaming tokens one at a time lets people read the answer".split()


class Worker:
    """A real ``tokenwire worker`` process."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def claimed(self) -> list[str]:
        return re.findall(r"event=job_claimed stream=(\S+)", self.log())

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


WorkerFactory = Callable[..., Worker]


@pytest.fixture(scope="module")
def start_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFactory]:
    started: list[Worker] = []

    def start(broker: str, *args: str, **env: str) -> Worker:
        log_path = tmp_path_factory.mktemp("worker") / "worker.log"
        full_env = {**os.environ, "TOKENWIRE_MODEL": "scripted", "PYTHONUNBUFFERED": "1", **env}
        cmd = [sys.executable, "-m", "tokenwire", "worker", "--broker", broker, *args]
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        worker = Worker(proc, log_path)
        started.append(worker)
        deadline = time.monotonic() + 60
        while "event=worker_ready" not in worker.log():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start: {worker.log()[-2000:]}")
            time.sleep(0.05)
        return worker

    yield start
    for worker in started:
        worker.stop()


class Cluster:
    """Two pure gateways and one worker on one database, shared by the tests below and
    started again where a test before killed one of them."""

    def __init__(self, start_server: ServerFactory, start_worker: WorkerFactory, broker: str):
        self._start_server, self._start_worker, self.broker = start_server, start_worker, broker
        self._a = self._b = None  # type: ServerProcess | None
        self._worker: Worker | None = None

    def _gateway(self, current: ServerProcess | None) -> ServerProcess:
        if current is not None and current.proc.poll() is None:
            return current
        return gateway(self._start_server, self.broker)

    @property
    def a(self) -> ServerProcess:
        self._a = self._gateway(self._a)
        return self._a

    @property
    def b(self) -> ServerProcess:
        self._b = self._gateway(self._b)
        return self._b

    @property
    def worker(self) -> Worker:
        if self._worker is None or self._worker.proc.poll() is not None:
            self._worker = self._start_worker(self.broker)
        return self._worker

    def all(self) -> tuple[ServerProcess, ServerProcess, Worker]:
        """A, B and the worker, those not running started side by side."""
        a, b, worker = together(lambda: self.a, lambda: self.b, lambda: self.worker)
        return cast(ServerProcess, a), cast(ServerProcess, b), cast(Worker, worker)


def together(*starts: Callable[[], object]) -> list[object]:
    """Start processes side by side (each waits seconds for its port or its ready line)."""
    with ThreadPoolExecutor(len(starts)) as pool:
        return [f.result() for f in [pool.submit(start) for start in starts]]


@pytest.fixture(scope="module")
def cluster(
    start_server: ServerFactory, start_worker: WorkerFactory, redis_server: RedisServer
) -> Cluster:
    return Cluster(start_server, start_worker, db(redis_server, 5))


def db(redis_server: RedisServer, n: int) -> str:
    """Database ``n`` on the session's server, emptied (tests here own 5 to 11)."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    url = redis_server.url.rsplit("/", 1)[0] + f"/{n}"
    import redis

    with redis.Redis.from_url(url) as r:
        r.flushdb()
    return url


def gateway(start_server: ServerFactory, broker: str, **env: str) -> ServerProcess:
    return start_server("--broker", broker, "--model-workers", "0", **env)


def read_sse(
    client: httpx.Client, url: str, after: int | None = None, until: int | None = None
) -> list[tuple[str, int, str]]:
    """(kind, seq, data) of each event, one per seq also where a catch-up merged tokens
    into one frame (``from_seq``); stops after seq ``until`` or at the end."""
    headers = {"Last-Event-ID": str(after)} if after is not None else {}
    out: list[tuple[str, int, str]] = []
    kind = data = ""
    with client.stream("GET", url, headers=headers) as live:
        assert live.status_code == 200, live.read()
        for line in live.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line.startswith("id: "):
                seq = int(line[4:])
                first = json.loads(data).get("from_seq", seq)
                out += [(kind, covered, data) for covered in range(first, seq + 1)]
                if until is not None and seq >= until:
                    break
    return out


def wait_idle(client: httpx.Client, base: str, within_s: float = 5.0) -> None:
    """Until the gateway at ``base`` runs no job in its generation slots."""
    deadline = time.monotonic() + within_s
    while client.get(base + "/healthz").json()["jobs"]["running"]:
        assert time.monotonic() < deadline, "the slot was not freed"
        time.sleep(0.02)


def start(client: httpx.Client, base: str, **body: object) -> str:
    started = client.post(base + "/v1/streams", json={"prompt": "hi", **body})
    assert started.status_code == 201, started.text
    return str(started.json()["id"])


def test_a_job_queued_on_one_gateway_runs_on_a_worker_and_is_read_on_another(
    cluster: Cluster,
) -> None:
    a, b, worker = cluster.all()
    before = worker.claimed()
    with httpx.Client(timeout=30) as client:
        started = client.post(a.url + "/v1/streams", json={"prompt": "hi", "max_tokens": 10})
        assert started.status_code == 201 and started.json()["status"] == "pending"
        sid = started.json()["id"]
        events = read_sse(client, f"{b.url}/v1/streams/{sid}/events")
        assert [seq for _, seq, _ in events] == list(range(1, 13))
        status = client.get(b.url + started.json()["status_url"])
        assert status.status_code == 200, status.text
        assert (status.json()["status"], status.json()["last_seq"]) == ("done", 12)
        assert [k for k, _, _ in events] == ["token"] * 10 + ["metrics", "done"]
        text = "".join(re.findall(r'"text":"([^"]*)"', "".join(d for _, _, d in events)))
        assert text.split() == SCRIPTED[:10]
        # The OpenAI route queues its generation the same way.
        answer = client.post(
            a.url + "/v1/chat/completions",
            json={"model": "scripted", "messages": [{"role": "user", "content": "x"}],
                  "max_tokens": 4},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"].split() == SCRIPTED[:4]
    assert worker.claimed()[len(before) :] == [sid, answer.headers["x-tokenwire-stream"]]
    import redis

    with redis.Redis.from_url(cluster.broker) as r:
        deadline = time.monotonic() + 5
        while r.hlen("tw:jobs:running") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.xlen("tw:jobs") == 0 and r.hlen("tw:jobs:running") == 0


def test_each_job_is_claimed_by_exactly_one_of_two_workers(
    cluster: Cluster, start_worker: WorkerFactory
) -> None:
    _, g, w1 = cluster.all()
    w2 = start_worker(cluster.broker)
    before = w1.claimed()
    try:
        with httpx.Client(timeout=30) as client:
            sids = [start(client, g.url, max_tokens=15, delay_ms=20) for _ in range(6)]
            for sid in sids:
                events = read_sse(client, f"{g.url}/v1/streams/{sid}/events")
                assert [seq for _, seq, _ in events] == list(range(1, 18))
                assert events[-1][0] == "done"
    finally:
        w2.stop()
    claims1, claims2 = w1.claimed()[len(before) :], w2.claimed()
    assert sorted(claims1 + claims2) == sorted(sids)  # every job once, none twice
    assert claims1 and claims2  # one slot each: both had to work


def test_a_full_queue_is_a_clear_503_and_a_job_waits_a_bounded_time(
    cluster: Cluster, start_server: ServerFactory
) -> None:
    *_, worker = cluster.all()  # the one slot of the database
    env = {"TOKENWIRE_MAX_QUEUED_JOBS": "2", "TOKENWIRE_MAX_JOB_WAIT_S": "1"}
    g = gateway(start_server, cluster.broker, **env)
    with httpx.Client(timeout=30) as client:
        busy = start(client, g.url, max_tokens=150, delay_ms=20)
        read_sse(client, f"{g.url}/v1/streams/{busy}/events", until=1)  # claimed: running
        waiting = [start(client, g.url, max_tokens=3) for _ in range(2)]
        refused = client.post(g.url + "/v1/streams", json={"prompt": "x", "max_tokens": 3})
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "queue_full" and "2 generation jobs" in error["message"]
        for sid in waiting:  # the slot stays busy for 3 s: they wait 1 s, then end
            last = read_sse(client, f"{g.url}/v1/streams/{sid}/events")[-1]
            assert last[0] == "error" and '"code":"queue_timeout"' in last[2], last
        assert read_sse(client, f"{g.url}/v1/streams/{busy}/events")[-1][0] == "done"
    g.stop()  # its 1 s wait would end the jobs of the tests after this one
    assert busy in worker.claimed() and not set(waiting) & set(worker.claimed())


def test_the_embedded_model_runs_on_a_worker(cluster: Cluster) -> None:
    a, _, worker = cluster.all()
    with httpx.Client(timeout=60) as client:
        sid = start(client, a.url, model="smollm2", max_tokens=8, temperature=0)
        events = read_sse(client, f"{a.url}/v1/streams/{sid}/events")
    assert events[-1][0] == "done", events[-1]
    tokens = [d for k, _, d in events if k == "token"]
    assert 1 <= len(tokens) <= 8 and all('"text":' in d for d in tokens)
    assert worker.claimed()[-1] == sid  # llama.cpp ran in the worker's own pool


def test_a_stop_through_any_gateway_reaches_the_worker(cluster: Cluster) -> None:
    a, b, worker = cluster.all()
    with httpx.Client(timeout=30) as client:
        sid = start(client, a.url, max_tokens=2000, delay_ms=20)
        with client.stream("GET", f"{b.url}/v1/streams/{sid}/events") as live:
            kinds: list[str] = []
            for line in live.iter_lines():
                if line.startswith("event: "):
                    kinds.append(line[7:])
                if kinds.count("token") == 3 and len(kinds) == 4:  # the open frame first
                    stopped = client.delete(f"{a.url}/v1/streams/{sid}")  # neither runs it
                    asked = time.monotonic()
        assert stopped.status_code == 200 and stopped.json()["status"] == "cancelled"
        assert kinds[-1] == "cancelled" and time.monotonic() - asked < 5
    assert f"event=cancel stream={sid}" in worker.log()  # the producer stopped there


def test_a_gateway_killed_mid_stream_is_resumed_on_another_exactly_once(
    cluster: Cluster,
) -> None:
    a, b, _ = cluster.all()
    with httpx.Client(timeout=30) as client:
        sid = start(client, a.url, max_tokens=60, delay_ms=25)
        first = read_sse(client, f"{a.url}/v1/streams/{sid}/events", until=10)
        a.stopping = True  # not a stall: killed on purpose
        a.proc.kill()
        a.proc.wait(10)
        rest = read_sse(client, f"{b.url}/v1/streams/{sid}/events", after=first[-1][1])
    seqs = [seq for _, seq, _ in first + rest]
    assert seqs == list(range(1, 63))
    assert rest[-1][0] == "done" and sum(k == "token" for k, _, _ in first + rest) == 60


def test_a_worker_killed_mid_stream_ends_it_with_worker_lost_within_10_s(
    cluster: Cluster,
) -> None:
    g, worker = cluster.b, cluster.worker  # A was killed before: not needed here
    with httpx.Client(timeout=30) as client:
        sid = start(client, g.url, max_tokens=2000, delay_ms=20)
        first = read_sse(client, f"{g.url}/v1/streams/{sid}/events", until=5)
        worker.kill9()
        killed = time.monotonic()
        rest = read_sse(client, f"{g.url}/v1/streams/{sid}/events", after=5)
        waited = time.monotonic() - killed
        assert rest[-1][0] == "error" and '"code":"worker_lost"' in rest[-1][2]
        assert waited < 10, waited
        assert [seq for _, seq, _ in first + rest] == list(range(1, rest[-1][1] + 1))
        assert rest[-1][1] < 2000  # it did not run to its end somewhere
        # The next request finds no live worker: said at once, not queued forever.
        refused = client.post(g.url + "/v1/streams", json={"prompt": "x", "max_tokens": 3})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_workers"


def test_a_worker_stream_runs_while_watched_elsewhere_and_ends_on_sigterm(
    cluster: Cluster, start_worker: WorkerFactory
) -> None:
    g = cluster.b  # its worker was killed before: this one is the only slot
    worker = start_worker(cluster.broker, "--model-workers", "2", TOKENWIRE_GRACE_S="1.5")
    with httpx.Client(timeout=30) as client:
        unwatched = start(client, g.url, max_tokens=2000, delay_ms=20)
        watched = start(client, g.url, max_tokens=2000, delay_ms=20)
        # Viewers on the gateway count on the worker: past the 1.5 s grace, still on.
        first = read_sse(client, f"{g.url}/v1/streams/{watched}/events", until=100)
        assert [k for k, _, _ in first].count("token") == 100, first
        last = read_sse(client, f"{g.url}/v1/streams/{unwatched}/events")[-1]
        assert last[0] == "cancelled" and '"reason":"no_subscribers"' in last[2], last
        # SIGTERM: the worker ends what it runs itself before it leaves (not worker_lost).
        worker.proc.terminate()
        last = read_sse(client, f"{g.url}/v1/streams/{watched}/events", after=100)[-1]
        assert last[0] == "cancelled" and '"reason":"shutdown"' in last[2], last
        assert worker.proc.wait(10) == 0


def test_gateways_with_model_workers_run_their_own_requests_and_each_others_jobs(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    broker = db(redis_server, 11)
    started = together(*[lambda: start_server("--broker", broker)] * 2)  # one slot each
    a, b = cast(ServerProcess, started[0]), cast(ServerProcess, started[1])
    long = {"prompt": "x", "max_tokens": 2000, "delay_ms": 20}
    with httpx.Client(timeout=30) as client:
        own_a = client.post(a.url + "/v1/streams", json=long).json()
        assert own_a["status"] == "running"  # A's free slot: it runs here, no queue hop
        to_b = start(client, a.url, max_tokens=5)  # A is busy: queued, B's free slot
        events = read_sse(client, f"{a.url}/v1/streams/{to_b}/events")
        assert [k for k, _, _ in events][-1] == "done" and len(events) == 7
        # B frees its slot just after the terminal event: until then B's own request
        # would be queued too, and A could claim it before the one meant for A.
        wait_idle(client, b.url)
        own_b = client.post(b.url + "/v1/streams", json=long).json()
        assert own_b["status"] == "running"  # B's free slot: it runs on B
        to_a = client.post(a.url + "/v1/streams", json={"prompt": "x", "max_tokens": 5})
        assert to_a.json()["status"] == "pending"  # both slots busy
        with client.stream("GET", f"{a.url}/v1/streams/{to_a.json()['id']}/events") as live:
            # read on A as another node's stream, until A's slot frees and A runs it
            assert client.delete(f"{a.url}/v1/streams/{own_a['id']}").status_code == 200
            kinds = [line[7:] for line in live.iter_lines() if line.startswith("event: ")]
        assert kinds[-1] == "done" and kinds.count("token") == 5
        assert client.delete(f"{b.url}/v1/streams/{own_b['id']}").status_code == 200
        assert client.get(a.url + "/healthz").json()["jobs"]["slots"] == 1
    assert f"event=job_claimed stream={to_b}" in b.log()
    assert f"event=job_claimed stream={to_a.json()['id']}" in a.log()


def test_redis_down_longer_than_the_liveness_loses_no_running_job(
    start_server: ServerFactory, start_worker: WorkerFactory, own_redis: RedisServer
) -> None:
    g, _ = together(
        lambda: gateway(start_server, own_redis.url), lambda: start_worker(own_redis.url)
    )
    g = cast(ServerProcess, g)
    with httpx.Client(timeout=60) as client:
        sid = start(client, g.url, max_tokens=200, delay_ms=20)
        first = read_sse(client, f"{g.url}/v1/streams/{sid}/events", until=20)
        own_redis.restart(down_s=4)  # past the 3 s liveness (AOF on)
        rest = read_sse(client, f"{g.url}/v1/streams/{sid}/events", after=first[-1][1])
    assert rest[-1][0] == "done", rest[-1]  # not worker_lost: nobody was reaped
    assert [seq for _, seq, _ in first + rest] == list(range(1, 203))


async def test_after_an_outage_a_reaper_waits_one_liveness_before_counting_nodes_gone(
    own_redis: RedisServer,
) -> None:
    import asyncio

    from tokenwire.broker.redis import BrokerUnavailable, RedisBroker
    from tokenwire.broker.redis_jobs import JobQueue

    brokers = [RedisBroker(own_redis.url), RedisBroker(own_redis.url)]
    worker = JobQueue(brokers[0], node_id="w1", ttl_s=0.5)
    reaper = JobQueue(brokers[1], node_id="g1", ttl_s=0.5)
    try:
        await worker.heartbeat()
        await brokers[0].create("st_a")
        await worker.run_here("st_a")
        own_redis.stop()
        with pytest.raises(BrokerUnavailable):
            await reaper.reap()
        own_redis.start()
        await asyncio.sleep(0.6)  # w1's liveness ran out while Redis was away
        assert await reaper.reap() == []  # w1 gets a renewal's time first
        await asyncio.sleep(0.5)  # ... and does not renew: gone
        assert await reaper.reap() == ["st_a"]
        info = await brokers[1].info("st_a")
        assert info.closed and info.last_seq == 1  # worker_lost, appended once
    finally:
        for broker in brokers:
            await broker.aclose()


def test_a_pure_gateway_on_the_memory_broker_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tokenwire.cli import main

    for name in [n for n in os.environ if n.startswith("TOKENWIRE_")]:
        monkeypatch.delenv(name)
    for argv in (["serve", "--model-workers", "0"], ["worker"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "redis" in err.lower(), err
