"""The worker: concurrency, takeover of a dead worker's jobs, stopping, loading graphs."""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from redis.exceptions import ConnectionError as RedisConnectionError

from runstream.core.errors import ConfigError
from runstream.core.events import Event
from runstream.worker.demo_graph import build_demo_graph, demo_answer
from runstream.worker.queue import GROUP, JobQueue, QueuedJob
from runstream.worker.runner import Graph
from runstream.worker.worker import Worker, load_graph

from .conftest import Setup

LEASE = 0.6


@pytest.fixture
def setup(worker_setup: Setup) -> Setup:
    """Worker tests run on two backends only: the queue matters here, the backend less."""
    return worker_setup


async def wait_until(check: Callable[[], Coroutine[Any, Any, bool]], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {within} s")
        await asyncio.sleep(0.01)


async def read_all(setup: Setup, job_id: str) -> list[Event]:
    return [event async for event in setup.transport.read(job_id)]


class Started:
    """A worker running in a task of the test's event loop."""

    def __init__(
        self, setup: Setup, graph: Graph, name: str = "test-worker", **overrides: Any
    ) -> None:
        self.setup = setup.with_settings(**{"lease_seconds": LEASE, **overrides})
        self.queue = JobQueue(self.setup.redis, self.setup.settings)
        self.worker = Worker(
            self.setup.settings, graph, self.setup.transport, self.queue, name=name
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Started:
        self.task = asyncio.create_task(self.worker.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        if not self.task.done():
            self.worker.stop()
            self.worker.stop()
        await self.task

    async def status_is(self, job_id: str, state: str) -> bool:
        status = await self.queue.status(job_id)
        return status is not None and status.status == state


class SlowState(TypedDict, total=False):
    prompt: str


def sleepy_graph(seconds: float, active: list[int], peak: list[int]) -> Any:
    async def work(state: SlowState) -> SlowState:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        get_stream_writer()({"started": state.get("prompt", "")})
        await asyncio.sleep(seconds)
        active[0] -= 1
        return {}

    builder = StateGraph(SlowState)
    builder.add_node("work", work)
    builder.add_edge(START, "work")
    builder.add_edge("work", END)
    return builder.compile()


async def test_worker_runs_jobs_concurrently_up_to_its_limit(setup: Setup) -> None:
    active, peak = [0], [0]
    graph = sleepy_graph(0.2, active, peak)
    async with Started(setup, graph, worker_concurrency=2, block_ms=50) as started:
        for n in range(5):
            await started.queue.submit(f"job-{n}", {"prompt": f"p{n}"})
        for n in range(5):
            await wait_until(lambda n=n: started.status_is(f"job-{n}", "done"))

    assert peak == [2]
    for n in range(5):
        events = await read_all(setup, f"job-{n}")
        assert [(e.seq, e.type) for e in events] == [(1, "custom"), (2, "update"), (3, "done")]
        assert events[0].payload == {"started": f"p{n}"}
    assert await setup.redis.xlen(started.queue.stream) == 0


async def test_worker_leaves_the_consumer_group_when_it_stops(setup: Setup) -> None:
    async with Started(setup, build_demo_graph(10_000), block_ms=50) as started:
        await started.queue.submit("one", {"prompt": "p"})
        await wait_until(lambda: started.status_is("one", "done"))
        names = [c["name"] for c in await setup.redis.xinfo_consumers(started.queue.stream, GROUP)]
        assert names == [b"test-worker"]

    assert await setup.redis.xinfo_consumers(started.queue.stream, GROUP) == []


async def test_worker_keeps_taking_jobs_after_redis_was_unreachable(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    started = Started(setup, build_demo_graph(10_000), block_ms=50)
    real_take = started.queue.take
    failures = [RedisConnectionError("Connection refused")] * 2

    async def flaky_take(consumer: str, count: int, block_ms: int) -> list[QueuedJob]:
        if failures:
            raise failures.pop()
        return await real_take(consumer, count, block_ms)

    monkeypatch.setattr(started.queue, "take", flaky_take)
    with caplog.at_level(logging.WARNING, logger="runstream.worker.worker"):
        async with started:
            await started.queue.submit("later", {"prompt": "p"})
            await wait_until(lambda: started.status_is("later", "done"))

    retries = [r.getMessage() for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert retries == [
        "worker test-worker: Redis unavailable (Connection refused); retry in 0.1 s",
        "worker test-worker: Redis unavailable (Connection refused); retry in 0.2 s",
    ]


async def test_a_job_longer_than_its_lease_is_not_taken_by_another_worker(setup: Setup) -> None:
    active, peak = [0], [0]
    graph = sleepy_graph(LEASE * 4, active, peak)
    async with (
        Started(setup, graph, name="owner", block_ms=50) as owner,
        Started(setup, graph, name="other", block_ms=50),
    ):
        await owner.queue.submit("long", {"prompt": "p"})
        await wait_until(lambda: owner.status_is("long", "done"))
    events = await read_all(setup, "long")

    assert [(e.seq, e.type) for e in events] == [(1, "custom"), (2, "update"), (3, "done")]
    assert peak == [1]
    assert await owner.status_is("long", "done")


async def take_and_die(setup: Setup, job_id: str, prompt: str = "p") -> JobQueue:
    """Submit a job and take it as a worker that then dies; wait past its lease."""
    queue = JobQueue(setup.redis, setup.with_settings(lease_seconds=LEASE).settings)
    await queue.submit(job_id, {"prompt": prompt})
    [job] = await queue.take("dead-worker", count=1, block_ms=10)
    assert job.job_id == job_id
    return queue


async def test_taken_over_job_that_published_events_ends_with_producer_lost(setup: Setup) -> None:
    queue = await take_and_die(setup, "lost")
    await setup.transport.publish_many(
        "lost", [Event("token", {"text": "Hel"}), Event("token", {"text": "lo"})]
    )
    await asyncio.sleep(LEASE + 0.1)

    async with Started(setup, build_demo_graph(10_000), block_ms=50) as started:
        await wait_until(lambda: started.status_is("lost", "failed"))
    events = await read_all(setup, "lost")

    assert [(e.seq, e.type) for e in events] == [
        (1, "token"),
        (2, "token"),
        (3, "error"),
        (4, "done"),
    ]
    assert events[2].payload["reason"] == "producer_lost"
    assert events[2].payload["after_seq"] == 2
    assert "not run again" in events[2].payload["message"]
    assert events[3].payload == {"events": 2}
    status = await queue.status("lost")
    assert status is not None
    assert status.error is not None
    assert status.error.startswith("producer_lost: ")
    assert (await setup.redis.xpending(queue.stream, GROUP))["pending"] == 0


async def test_taken_over_job_that_published_nothing_runs_from_the_start(setup: Setup) -> None:
    await take_and_die(setup, "rerun", prompt="explain")
    await asyncio.sleep(LEASE + 0.1)

    async with Started(setup, build_demo_graph(10_000), block_ms=50) as started:
        await wait_until(lambda: started.status_is("rerun", "done"))
    events = await read_all(setup, "rerun")

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "done"
    text = "".join(e.payload["text"] for e in events if e.type == "token")
    assert text == demo_answer("explain")


async def test_job_that_kept_killing_its_workers_is_not_run_again(setup: Setup) -> None:
    lease = 0.2
    queue = JobQueue(setup.redis, setup.with_settings(lease_seconds=lease).settings)
    await queue.submit("poison", {"prompt": "p"})
    [first] = await queue.take("dead-1", count=1, block_ms=10)
    for n in (2, 3):
        await asyncio.sleep(lease + 0.05)
        [again] = await queue.take(f"dead-{n}", count=1, block_ms=10)
        assert (again.entry_id, again.deliveries) == (first.entry_id, n)
    await asyncio.sleep(lease + 0.05)

    async with Started(setup, build_demo_graph(10_000), lease_seconds=lease, block_ms=50) as s:
        await wait_until(lambda: s.status_is("poison", "failed"))
    events = await read_all(setup, "poison")

    assert [(e.seq, e.type) for e in events] == [(1, "error"), (2, "done")]
    assert events[0].payload == {
        "reason": "producer_lost",
        "message": "3 workers stopped while running this job before it published anything; "
        "it is not run again",
        "after_seq": 0,
    }


async def test_taken_over_job_that_had_finished_is_only_acked(setup: Setup) -> None:
    queue = await take_and_die(setup, "finished")
    await setup.transport.publish("finished", Event("token", {"text": "all"}))
    await queue.mark_finished("finished", tokens=1)
    await setup.transport.finish("finished", {"events": 1})
    await asyncio.sleep(LEASE + 0.1)

    async with Started(setup, build_demo_graph(10_000), block_ms=50):
        await wait_until(
            lambda: _pending_is(setup, queue, 0),
        )
    events = await read_all(setup, "finished")

    assert [(e.seq, e.type) for e in events] == [(1, "token"), (2, "done")]
    status = await queue.status("finished")
    assert status is not None
    assert (status.status, status.events) == ("done", 2)


async def _pending_is(setup: Setup, queue: JobQueue, count: int) -> bool:
    pending = await setup.redis.xpending(queue.stream, GROUP)
    return bool(pending["pending"] == count)


async def test_first_stop_lets_the_running_job_finish(setup: Setup) -> None:
    async with Started(setup, build_demo_graph(400), block_ms=50) as started:
        await started.queue.submit("graceful", {"prompt": "p"})
        await wait_until(lambda: _has_events(setup, "graceful", 5))
        started.worker.stop()
        assert started.task is not None
        await started.task
        assert started.worker.running_jobs == []
    events = await read_all(setup, "graceful")

    assert events[-1].type == "done"
    assert "".join(e.payload["text"] for e in events if e.type == "token") == demo_answer("p")
    assert await started.status_is("graceful", "done")


async def _has_events(setup: Setup, job_id: str, count: int) -> bool:
    return (await setup.transport.last_seq(job_id) or 0) >= count


async def test_second_stop_ends_a_job_with_events_as_worker_stopped(setup: Setup) -> None:
    async with Started(setup, build_demo_graph(20), block_ms=50) as started:
        await started.queue.submit("halted", {"prompt": "p"})
        await wait_until(lambda: _has_events(setup, "halted", 4))
        started.worker.stop()
        started.worker.stop()
        assert started.task is not None
        await started.task
    events = await read_all(setup, "halted")

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events[-2:]] == ["error", "done"]
    assert events[-2].payload["reason"] == "worker_stopped"
    assert events[-2].payload["after_seq"] == len(events) - 2
    assert await started.status_is("halted", "failed")
    assert await _pending_is(setup, started.queue, 0)


async def test_second_stop_leaves_a_job_without_events_pending(setup: Setup) -> None:
    graph = sleepy_graph(30, [0], [0])

    class Silent:
        """The sleepy graph without its custom event: nothing is published."""

        async def astream(
            self, graph_input: Any, stream_mode: Any = None, config: Any = None
        ) -> AsyncIterator[Any]:
            await asyncio.sleep(30)
            async for item in graph.astream(graph_input, stream_mode=stream_mode):
                yield item

    async with Started(setup, Silent(), block_ms=50) as started:
        await started.queue.submit("quiet", {"prompt": "p"})
        await wait_until(lambda: started.status_is("quiet", "running"))
        started.worker.stop()
        started.worker.stop()
        assert started.task is not None
        await started.task

    assert await setup.transport.last_seq("quiet") is None
    assert await _pending_is(setup, started.queue, 1)


async def test_job_whose_lease_was_taken_is_cancelled_without_events(setup: Setup) -> None:
    async with Started(setup, build_demo_graph(20), block_ms=50) as started:
        await started.queue.submit("stolen", {"prompt": "p"})
        await wait_until(lambda: _has_events(setup, "stolen", 3))
        [job] = [job for job, _ in started.worker._running.values()]
        await setup.redis.xclaim(started.queue.stream, GROUP, "thief", 0, [job.entry_id])
        # The thief stays alive: it renews its lease, so nobody takes the job back.
        thief = asyncio.create_task(_keep_renewing(started.queue, "thief", job))
        await wait_until(lambda: _running_is_empty(started.worker), within=LEASE * 3)
        last = await setup.transport.last_seq("stolen")
        await asyncio.sleep(LEASE * 2)

        assert await setup.transport.last_seq("stolen") == last
        assert await started.status_is("stolen", "running")
        [still] = await setup.redis.xpending_range(started.queue.stream, GROUP, "-", "+", 1)
        assert still["consumer"] == b"thief"
        thief.cancel()


async def _keep_renewing(queue: JobQueue, consumer: str, job: QueuedJob) -> None:
    while True:
        assert await queue.renew(consumer, [job]) == {job.entry_id}
        await asyncio.sleep(LEASE / 3)


async def test_worker_reclaiming_its_own_running_job_does_not_start_it_twice(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = Started(setup, build_demo_graph(10_000))
    await started.queue.submit("mine", {"prompt": "p"})
    [job] = await started.queue.take("test-worker", count=1, block_ms=10)
    running = asyncio.create_task(asyncio.sleep(30))
    started.worker._running[job.entry_id] = (job, running)

    async def take_own(consumer: str, count: int, block_ms: int) -> list[QueuedJob]:
        return [replace(job, reclaimed=True)]

    monkeypatch.setattr(started.queue, "take", take_own)
    await started.worker._take_jobs()

    assert started.worker._running == {job.entry_id: (job, running)}
    running.cancel()


async def _running_is_empty(worker: Worker) -> bool:
    return worker.running_jobs == []


GRAPH_MODULE = """
from runstream.worker.demo_graph import build_demo_graph

graph = build_demo_graph(1000.0)
builder_only = None


def make_graph():
    return build_demo_graph(1000.0)


def make_nothing():
    return 42


def explode():
    raise RuntimeError("no model key")


class Holder:
    graph = graph
"""


@pytest.fixture
def graph_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"user_graphs_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(GRAPH_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_load_graph_accepts_a_graph_a_factory_and_a_dotted_attribute(graph_module: str) -> None:
    assert hasattr(load_graph(f"{graph_module}:graph"), "astream")
    assert hasattr(load_graph(f"{graph_module}:make_graph"), "astream")
    assert load_graph(f"{graph_module}:Holder.graph") is load_graph(f"{graph_module}:graph")


@pytest.mark.parametrize(
    ("attribute", "problem"),
    [
        ("", "expected the form module:attribute"),
        (":missing", "has no 'missing'"),
        (":builder_only", "NoneType is not a graph"),
        (":make_nothing", "the factory returned int, not a compiled graph"),
        (":explode", "calling the factory raised RuntimeError('no model key')"),
    ],
)
def test_load_graph_names_the_setting_and_the_problem(
    graph_module: str, attribute: str, problem: str
) -> None:
    spec = graph_module + attribute
    with pytest.raises(ConfigError) as caught:
        load_graph(spec)
    assert str(caught.value).startswith(f"RUNSTREAM_GRAPH / --graph {spec!r}: ")
    assert problem in str(caught.value)


def test_load_graph_rejects_a_missing_module_and_a_builder() -> None:
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_xyz'"):
        load_graph("no_such_module_xyz:graph")
    with pytest.raises(ConfigError, match=r"graph builder; point at builder.compile\(\)"):
        load_graph("langgraph.graph:StateGraph")


async def test_stopped_job_reports_the_tokens_it_published(setup: Setup) -> None:
    async with Started(setup, build_demo_graph(20), block_ms=50) as started:
        await started.queue.submit("counted", {"prompt": "p"})
        await wait_until(lambda: _has_events(setup, "counted", 5))
        started.worker.stop()
        started.worker.stop()
        assert started.task is not None
        await started.task
    events = await read_all(setup, "counted")
    status = await started.queue.status("counted")

    tokens = sum(1 for e in events if e.type == "token")
    assert tokens >= 3
    assert status is not None
    assert (status.status, status.tokens) == ("failed", tokens)


async def test_job_ended_by_someone_else_while_running_is_acked_without_a_second_done(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    async def ended_elsewhere(state: SlowState, config: RunnableConfig) -> SlowState:
        # What a reader does when it finds the job's lease gone: it ends the job itself.
        job_id = config["configurable"]["thread_id"]
        await setup.transport.finish(job_id, {"ended_by": "reader"})
        return {}

    builder = StateGraph(SlowState)
    builder.add_node("work", ended_elsewhere)
    builder.add_edge(START, "work")
    builder.add_edge("work", END)

    async with Started(setup, builder.compile(), block_ms=50) as started:
        await started.queue.submit("ended", {"prompt": "x"})
        # Acking deletes the job's entry, so an empty queue means the worker is done with it.
        await wait_until(lambda: _queue_is_empty(setup, started.queue))
    events = await read_all(setup, "ended")

    assert [(e.seq, e.type, dict(e.payload)) for e in events] == [
        (1, "done", {"ended_by": "reader"})
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("already" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def _queue_is_empty(setup: Setup, queue: JobQueue) -> bool:
    return bool(await setup.redis.xlen(queue.stream) == 0)
