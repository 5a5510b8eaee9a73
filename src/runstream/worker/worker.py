"""The worker process: take jobs from the queue, run several at once, keep their leases.

Stopping. The first SIGTERM or SIGINT stops taking jobs and lets the running ones finish
(their leases are still renewed), then `run` returns. A second signal cancels the running
jobs: one that has already published events ends with `error` {reason: "worker_stopped"}
then `done`, since its consumers saw part of its output; one that has published nothing
is left pending in the queue, and another worker runs it once its lease expires.

A job whose lease another worker took over (this one stalled for longer than
`lease_seconds`) is cancelled here without publishing anything: its new owner ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runstream.core.errors import ConfigError, JobDataLost, JobFinished
from runstream.core.redis_client import connect_redis, redis_refusal
from runstream.core.settings import Settings
from runstream.core.transport import Transport, open_transport
from runstream.migrate.compat import WorkerRegistry
from runstream.worker.queue import JobQueue, QueuedJob
from runstream.worker.runner import Graph, JobRunner

logger = logging.getLogger(__name__)

# Seconds between attempts to take jobs while Redis is unreachable.
RETRY_FIRST, RETRY_MAX = 0.1, 5.0

# A job that published nothing is run again after its worker dies, at most this many times.
MAX_DELIVERIES = 3

PRODUCER_LOST = "producer_lost"
WORKER_STOPPED = "worker_stopped"


class Worker:
    """Runs jobs from `queue` with `graph`, publishing through `transport`.

    At most `settings.worker_concurrency` jobs run at once. `graph` is a compiled
    LangGraph graph, or a zero-argument callable returning one.
    """

    def __init__(
        self,
        settings: Settings,
        graph: Graph | Callable[[], Graph],
        transport: Transport,
        queue: JobQueue,
        *,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.graph = graph if hasattr(graph, "astream") else _call_factory(graph)
        self.transport = transport
        self.queue = queue
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.runner = JobRunner(
            self.graph, transport, queue, worker_name=self.name, job_timeout=settings.job_timeout
        )
        self.registry = WorkerRegistry(queue.redis, settings)
        self._running: dict[str, tuple[QueuedJob, asyncio.Task[None]]] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._lost: set[str] = set()

    @property
    def running_jobs(self) -> list[str]:
        return [job.job_id for job, _ in self._running.values()]

    def stop(self) -> None:
        """Stop taking jobs; a second call also cancels the running ones."""
        if self._stopping.is_set():
            logger.warning(
                "worker %s: stopping now, cancelling %d jobs", self.name, len(self._running)
            )
            for _, task in self._running.values():
                task.cancel()
            return
        logger.info("worker %s: stopping after %d running jobs", self.name, len(self._running))
        self._stopping.set()

    async def run(self) -> None:
        """Take and run jobs until `stop()` (or SIGTERM/SIGINT), then wait for running jobs."""
        await self.queue.ensure_group()
        await self.registry.announce(self.name)
        logger.info(
            "worker %s: taking jobs from %s (concurrency %d, lease %g s)",
            self.name,
            self.queue.stream,
            self.settings.worker_concurrency,
            self.settings.lease_seconds,
        )
        renewer = asyncio.create_task(self._renew_forever())
        try:
            await self._take_until_stopped()
            await self._drain()
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
        await self._retire()
        logger.info("worker %s: stopped", self.name)

    async def _retire(self) -> None:
        try:
            await self.registry.withdraw(self.name)
            retired = await self.queue.retire(self.name)
        except (RedisConnectionError, RedisTimeoutError) as err:
            logger.warning("worker %s: could not leave the consumer group (%s)", self.name, err)
            return
        if not retired:
            logger.info("worker %s: stays in the consumer group, holding pending jobs", self.name)

    def install_signal_handlers(self) -> None:
        """Call `stop()` on SIGTERM and SIGINT (the event loop must be running)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def _take_until_stopped(self) -> None:
        retry = RETRY_FIRST
        while not self._stopping.is_set():
            try:
                await self._take_jobs()
            except (RedisConnectionError, RedisTimeoutError) as err:
                logger.warning(
                    "worker %s: Redis unavailable (%s); retry in %.1f s", self.name, err, retry
                )
                await _first_of(asyncio.sleep(retry), self._stopping.wait())
                retry = min(retry * 2, RETRY_MAX)
            else:
                retry = RETRY_FIRST

    async def _take_jobs(self) -> None:
        free = self.settings.worker_concurrency - len(self._running)
        if free <= 0:
            self._slot_freed.clear()
            await _first_of(self._slot_freed.wait(), self._stopping.wait())
            return
        jobs = await self.queue.take(self.name, free, self.settings.block_ms)
        for job in jobs:
            if job.entry_id in self._running:
                # Our own job, idle past its lease because this process stalled: the
                # claim just renewed it, and it is still running here.
                continue
            task = asyncio.create_task(self._process(job), name=f"job-{job.job_id}")
            self._running[job.entry_id] = (job, task)

    async def _drain(self) -> None:
        tasks = [task for _, task in self._running.values()]
        if tasks:
            logger.info("worker %s: waiting for %d running jobs", self.name, len(tasks))
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _process(self, job: QueuedJob) -> None:
        try:
            await self.queue.renew(self.name, [job])
            if job.reclaimed and await self._settle_reclaimed(job):
                return
            await self.runner.run(job.job_id, job.job_input)
            await self.queue.ack(job)
        except asyncio.CancelledError:
            await self._after_cancel(job)
        except (JobFinished, JobDataLost) as err:
            # Nothing left to do: a reader ended the job while this worker stalled past its
            # lease, or Redis lost the job's events. Running it again would not help.
            logger.warning("job %s: worker %s stops it: %s", job.job_id, self.name, err)
            await self.queue.ack(job)
        except Exception:
            # Publishing failed (Redis unreachable, say): the job stays pending and is
            # taken over once its lease expires.
            logger.exception("job %s: worker %s could not run it", job.job_id, self.name)
        finally:
            self._running.pop(job.entry_id, None)
            self._slot_freed.set()

    async def _settle_reclaimed(self, job: QueuedJob) -> bool:
        """End a job taken over from a dead worker without running it; False = run it."""
        if await self.queue.has_finished(job.job_id):
            logger.info("job %s had already finished; acking it", job.job_id)
            await self.queue.ack(job)
            return True
        last = await self.transport.last_seq(job.job_id) or 0
        if last > 0:
            message = (
                "the worker running this job stopped before it finished; the job is not run "
                "again because part of its output was already published"
            )
        elif job.deliveries > MAX_DELIVERIES:
            message = (
                f"{job.deliveries - 1} workers stopped while running this job before it "
                "published anything; it is not run again"
            )
        else:
            logger.info("job %s published nothing before its worker died; running it", job.job_id)
            return False
        await self._abandon(job, PRODUCER_LOST, message, last)
        return True

    async def _after_cancel(self, job: QueuedJob) -> None:
        if job.entry_id in self._lost:
            self._lost.discard(job.entry_id)
            return
        last = await self.transport.last_seq(job.job_id) or 0
        if last == 0 or await self.queue.has_finished(job.job_id):
            logger.warning("job %s left pending for another worker", job.job_id)
            return
        message = "the worker was stopped while running this job"
        await self._abandon(job, WORKER_STOPPED, message, last)

    async def _abandon(self, job: QueuedJob, reason: str, message: str, last: int) -> None:
        error = {"reason": reason, "message": message, "after_seq": last}
        await self.queue.mark_finished(job.job_id, error=f"{reason}: {message}")
        done_seq = await self.transport.finish(job.job_id, {"events": last}, error=error)
        await self.queue.ack(job)
        logger.warning(
            "job %s ended with %s after seq %d (done at seq %d)", job.job_id, reason, last, done_seq
        )

    async def _renew_forever(self) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            jobs = [job for job, _ in self._running.values()]
            try:
                await self.registry.announce(self.name)
                owned = await self.queue.renew(self.name, jobs)
            except Exception:
                logger.exception("worker %s: lease renewal failed; retrying", self.name)
                continue
            for job in jobs:
                if job.entry_id not in owned and job.entry_id in self._running:
                    logger.warning("job %s: lease lost to another worker; cancelling", job.job_id)
                    self._lost.add(job.entry_id)
                    self._running[job.entry_id][1].cancel()


def load_graph(spec: str) -> Graph:
    """Import `module:attribute` (a compiled graph, or a zero-argument callable returning one)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(_graph_problem(spec, "expected the form module:attribute"))
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(_graph_problem(spec, f"cannot import {module_name!r} ({err})")) from err
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as err:
            raise ConfigError(
                _graph_problem(spec, f"{module_name!r} has no {attribute!r}")
            ) from err
    if hasattr(target, "astream"):
        return target  # type: ignore[no-any-return]
    if hasattr(target, "compile"):
        raise ConfigError(
            _graph_problem(spec, "this is a graph builder; point at builder.compile()")
        )
    if callable(target):
        return _call_factory(target, spec)
    raise ConfigError(_graph_problem(spec, f"{type(target).__name__} is not a graph"))


def _call_factory(factory: Callable[[], Any], spec: str = "") -> Graph:
    try:
        graph = factory()
    except Exception as err:
        raise ConfigError(_graph_problem(spec, f"calling the factory raised {err!r}")) from err
    if not hasattr(graph, "astream"):
        raise ConfigError(
            _graph_problem(
                spec, f"the factory returned {type(graph).__name__}, not a compiled graph"
            )
        )
    return graph  # type: ignore[no-any-return]


def _graph_problem(spec: str, problem: str) -> str:
    return f"RUNSTREAM_GRAPH / --graph {spec!r}: {problem}"


def default_graph(settings: Settings) -> Graph:
    """The graph named by `settings.graph`, or the demo graph if it is empty."""
    if settings.graph:
        return load_graph(settings.graph)
    from runstream.worker.demo_graph import build_demo_graph

    return build_demo_graph(settings.demo_token_rate)


async def run_worker(settings: Settings, redis: Redis | None = None) -> None:
    """Open Redis, build the graph, and run a worker until SIGTERM/SIGINT."""
    graph = default_graph(settings)
    client = redis if redis is not None else connect_redis(settings)
    transport = open_transport(settings, client)
    queue = JobQueue(client, settings)
    worker = Worker(settings, graph, transport, queue)
    worker.install_signal_handlers()
    try:
        try:
            await queue.ensure_group()
        except RedisError as err:
            raise redis_refusal(settings.redis_url, err) from err
        await worker.run()
    finally:
        await transport.aclose()
        if redis is None:
            await client.aclose()


async def _first_of(*waits: Any) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
