"""Workloads through the real processes: (b) end to end and (d) concurrency.

For each backend the benchmark starts one `runstream worker` and one `runstream api`
(the built-in demo graph, streaming its answer at `--rate` tokens per second), runs one
unmeasured warm-up job, then (b) one job and (d) `--jobs` jobs at once. Each job is
submitted with `POST /jobs` and read as SSE from its `stream_url` by an httpx client.

A latency is the client's `time.time()` when a `data:` line arrives minus the envelope's
`ts`, stamped by the worker when it made the event (same machine, same clock). Events
stamped before the client asked for its stream were waiting in Redis, not travelling:
they are checked for delivery but left out of the latency figures (`backlog` in the JSON).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from runstream.bench.probes import ProcessUsage, connected_clients
from runstream.bench.processes import (
    BenchProcessError,
    ServicePair,
    process_usage,
    require_psutil,
)
from runstream.bench.progress import Advance
from runstream.bench.results import Measured
from runstream.bench.scenarios import KEY_PREFIX, backend_settings
from runstream.bench.stats import Delivery, DeliveryCheck
from runstream.core.keys import KeySpace

if TYPE_CHECKING:
    from runstream.bench.runner import Runner

logger = logging.getLogger(__name__)

PROMPT = "Compare Redis lists and Redis Streams for streaming tokens."
DEMO_TOKENS = 179  # words in the demo graph's English answer
JOB_MARGIN_SECONDS = 30.0
SECONDS_PER_EXTRA_JOB = 0.2
CANCEL_SECONDS = 5.0
RECONNECTS = 1


def service_env(backend: str, redis_url: str, rate: float, jobs: int) -> dict[str, str]:
    """The environment that puts a worker and an API on `backend`, sized for `jobs`."""
    settings = backend_settings(backend, redis_url)
    return {
        "RUNSTREAM_REDIS_URL": redis_url,
        "RUNSTREAM_BACKEND": settings.backend,
        "RUNSTREAM_LIST_MODE": settings.list_mode,
        "RUNSTREAM_KEY_PREFIX": KEY_PREFIX,
        "RUNSTREAM_GRAPH": "",
        "RUNSTREAM_DEMO_TOKEN_RATE": f"{rate:g}",
        "RUNSTREAM_WORKER_CONCURRENCY": str(max(jobs, 8)),
        # Each SSE reader of a blocking backend holds a pool connection while it waits.
        "RUNSTREAM_MAX_CONNECTIONS": str(jobs + 20),
    }


@dataclass(slots=True)
class JobStream:
    """What one SSE client saw of one job."""

    job_id: str = ""
    latencies: list[float] = field(default_factory=list)
    check: DeliveryCheck = field(default_factory=DeliveryCheck)
    backlog: int = 0
    made_up: int = 0
    last_seq: int = 0


async def run(runner: Runner, workloads: Sequence[str]) -> None:
    """Run the chosen end-to-end workloads for every backend, one process pair each."""
    require_psutil()
    for backend in runner.params.backends:
        await _run_backend(runner, backend, workloads)


async def _run_backend(runner: Runner, backend: str, workloads: Sequence[str]) -> None:
    params = runner.params
    jobs = params.jobs if "concurrency" in workloads else 1
    await _delete_bench_keys(runner)
    baseline = await connected_clients(runner.probe)
    pair = ServicePair(service_env(backend, params.redis_url, params.rate, jobs))
    try:
        await pair.wait_ready()
        await _follow_jobs(pair.base_url, 1, params.rate, _ignore)
        for workload in workloads:
            count = 1 if workload == "e2e" else params.jobs
            await runner.measure(
                workload,
                backend,
                _jobs_work(runner, pair, workload, backend, count),
                clients_baseline=baseline,
            )
    finally:
        pair.stop()
        await _delete_bench_keys(runner)


def _jobs_work(
    runner: Runner,
    pair: ServicePair,
    workload: str,
    backend: str,
    count: int,
) -> Any:
    async def work(keys: list[str]) -> tuple[Measured, dict[str, ProcessUsage]]:
        total = count * (DEMO_TOKENS + 3)
        async with process_usage(pair.services) as usage:
            with runner.tracker.task(workload, backend, total) as advance:
                start = time.perf_counter()
                streams = await _follow_jobs(pair.base_url, count, runner.params.rate, advance)
                elapsed = time.perf_counter() - start
        measured = await _measured(runner, streams, elapsed)
        keys.extend(key for s in streams for key in KeySpace(KEY_PREFIX).job(s.job_id).all)
        return measured, usage

    return work


async def _follow_jobs(base_url: str, count: int, rate: float, advance: Advance) -> list[JobStream]:
    """Run `count` jobs at once, each with its own SSE client connection.

    A fresh HTTP client each time: a kept-alive connection the API closed while idle
    would fail the next request.
    """
    streams = [JobStream() for _ in range(count)]
    # On a small machine many jobs run slower than their token rate: allow for it.
    deadline = DEMO_TOKENS / rate + JOB_MARGIN_SECONDS + count * SECONDS_PER_EXTRA_JOB
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    timeout = httpx.Timeout(JOB_MARGIN_SECONDS, connect=10)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as http:
        tasks = [asyncio.create_task(_follow(http, stream, advance)) for stream in streams]
        done, pending = await asyncio.wait(tasks, timeout=deadline)
        for task in pending:
            task.cancel()
        if pending:
            logger.error("%d of %d jobs did not end within %.0f s", len(pending), count, deadline)
            await asyncio.wait(pending, timeout=CANCEL_SECONDS)
    for task in done:
        task.result()  # a client failure (refused submission, HTTP error) ends the run
    return streams


async def _follow(http: httpx.AsyncClient, stream: JobStream, advance: Advance) -> None:
    """Submit one job and read its SSE stream to `done`."""
    try:
        await _submit_and_read(http, stream, advance)
    except httpx.HTTPError as err:
        raise BenchProcessError(
            f"SSE client of job {stream.job_id or '(not submitted)'} failed: {err!r}"
        ) from err


async def _submit_and_read(http: httpx.AsyncClient, stream: JobStream, advance: Advance) -> None:
    reply = await http.post("/jobs", json={"prompt": PROMPT})
    if reply.status_code != 202:
        raise BenchProcessError(f"POST /jobs answered {reply.status_code}: {reply.text[:200]}")
    accepted = reply.json()
    stream.job_id = accepted["job_id"]

    for attempt in range(1 + RECONNECTS):
        try:
            await _read(http, accepted["stream_url"], stream, advance)
            return
        except httpx.RemoteProtocolError as err:
            # What an EventSource does: reconnect, resuming after the last seq received.
            if attempt == RECONNECTS:
                raise
            logger.warning("job %s: stream dropped (%r); reconnecting", stream.job_id, err)


async def _read(http: httpx.AsyncClient, url: str, stream: JobStream, advance: Advance) -> None:
    headers = {"Last-Event-ID": str(stream.last_seq)} if stream.last_seq else {}
    # Events made after the client asked for its stream are live, even if the API is slow
    # to answer on a loaded machine; only those made before were waiting in Redis.
    opened = time.time()
    async with http.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            body = (await response.aread()).decode(errors="replace")[:200]
            raise BenchProcessError(f"GET {url} answered {response.status_code}: {body}")
        async for line in response.aiter_lines():
            if line.startswith("data:") and _record(stream, line, opened):
                advance(1)
                return
            if line.startswith("data:"):
                advance(1)


def _record(stream: JobStream, line: str, opened: float) -> bool:
    """Record one `data:` line; True once it is `done`."""
    now = time.time()
    envelope = json.loads(line[5:])
    seq, ts = int(envelope["seq"]), float(envelope["ts"])
    if seq == 0:
        # A made-up event (gap, idle timeout): the seqs it stands for count as lost.
        logger.warning("job %s: made-up %s event %s", stream.job_id, envelope["type"], envelope)
        stream.made_up += 1
        return False
    stream.check.add(seq - 1)
    stream.last_seq = max(stream.last_seq, seq)
    if ts >= opened:
        stream.latencies.append(now - ts)
    else:
        stream.backlog += 1
    return bool(envelope["type"] == "done")


async def _measured(runner: Runner, streams: list[JobStream], elapsed: float) -> Measured:
    deliveries = []
    for stream in streams:
        last = (
            await runner.probe.get(KeySpace(KEY_PREFIX).job(stream.job_id).seq)
            if stream.job_id
            else None
        )
        stream.check.expected = int(last or 0)
        deliveries.append(stream.check.result())
    delivery = Delivery(
        expected=sum(d.expected for d in deliveries),
        received=sum(d.received for d in deliveries),
        lost=sum(d.lost for d in deliveries),
        duplicated=sum(d.duplicated for d in deliveries),
        out_of_order=sum(d.out_of_order for d in deliveries),
    )
    latencies = [latency for stream in streams for latency in stream.latencies]
    backlog = sum(stream.backlog for stream in streams)
    return Measured(latencies, delivery, elapsed, delivery.expected, backlog)


async def _delete_bench_keys(runner: Runner) -> None:
    """Every key under the benchmark's prefix: jobs, their meta, the job queue."""
    await runner.discard([])


def _ignore(_: int) -> None:
    return None
