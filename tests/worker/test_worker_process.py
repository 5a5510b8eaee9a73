"""`runstream worker` as a real process against the real Redis test database."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from runstream.core.events import Event
from runstream.core.settings import load_settings
from runstream.core.transport import Transport, open_transport
from runstream.worker.demo_graph import demo_answer
from runstream.worker.queue import JobQueue

pytestmark = pytest.mark.slow

KOREAN_PROMPT = "Redis Streams와 리스트의 차이를 알려줘"
RUNSTREAM = Path(sys.executable).with_name("runstream")


class WorkerProcess:
    """A `runstream worker` subprocess whose log goes to a file."""

    def __init__(self, tmp_path: Path, env: dict[str, str], *args: str) -> None:
        self.log_path = tmp_path / f"worker-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(RUNSTREAM), "worker", *args], env=env, cwd=tmp_path, stderr=log
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def wait_for_log(self, text: str, within: float = 15) -> None:
        deadline = time.monotonic() + within
        while text not in self.log:
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker never logged {text!r}; log:\n{self.log}")
            time.sleep(0.05)


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without RUNSTREAM_* variables, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update({f"RUNSTREAM_{name.upper()}": value for name, value in settings.items()})
    return env


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(10)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_url, socket_timeout=10)
    await redis.flushdb()
    yield redis
    await redis.aclose()


def open_side(redis: Redis, redis_url: str, backend: str) -> tuple[JobQueue, Transport]:
    settings = load_settings(
        _env_file=None, redis_url=redis_url, backend=backend, block_ms=200, idle_timeout=30
    )
    return JobQueue(redis, settings), open_transport(settings, redis)


async def read_all(transport: Transport, job_id: str) -> list[Event]:
    return [event async for event in transport.read(job_id)]


@pytest.mark.parametrize("backend", ["streams", "list"])
async def test_worker_process_runs_a_submitted_job_to_done(
    tmp_path: Path, workers: list[WorkerProcess], client: Redis, redis_url: str, backend: str
) -> None:
    env = clean_env(redis_url=redis_url, lease_seconds="2", demo_token_rate="500", block_ms="200")
    worker = WorkerProcess(tmp_path, env, "--backend", backend, "--concurrency", "2")
    workers.append(worker)
    queue, transport = open_side(client, redis_url, backend)

    await queue.submit("proc-1", {"prompt": KOREAN_PROMPT})
    events = await read_all(transport, "proc-1")
    code = worker.stop(signal.SIGTERM)

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "done"
    tokens = [e.payload["text"] for e in events if e.type == "token"]
    assert "".join(tokens) == demo_answer(KOREAN_PROMPT)
    assert events[-1].payload["tokens"] == len(tokens)
    status = await queue.status("proc-1")
    assert status is not None
    assert (status.status, status.events) == ("done", len(events))
    assert code == 0
    log = worker.log
    assert f"worker: backend {backend}, list mode {'reliable' if backend == 'list' else '-'}" in log
    assert f"Redis {redis_url}," in log
    assert "concurrency 2" in log
    assert "stopped" in log


async def test_worker_killed_mid_job_is_ended_as_producer_lost_by_another(
    tmp_path: Path, workers: list[WorkerProcess], client: Redis, redis_url: str
) -> None:
    env = clean_env(redis_url=redis_url, lease_seconds="1", demo_token_rate="20", block_ms="200")
    doomed = WorkerProcess(tmp_path, env)
    workers.append(doomed)
    queue, transport = open_side(client, redis_url, "streams")
    await queue.submit("killed", {"prompt": "p"})
    deadline = time.monotonic() + 15
    while (await transport.last_seq("killed") or 0) < 5:
        assert time.monotonic() < deadline, doomed.log
        await asyncio.sleep(0.02)

    doomed.process.kill()
    doomed.process.wait(10)
    workers.append(WorkerProcess(tmp_path, env))
    events = await read_all(transport, "killed")

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events[-2:]] == ["error", "done"]
    assert events[-2].payload["reason"] == "producer_lost"
    assert events[-2].payload["after_seq"] == len(events) - 2
    text = "".join(e.payload["text"] for e in events if e.type == "token")
    assert demo_answer("p").startswith(text)
    assert 0 < len(text) < len(demo_answer("p"))
    status = await queue.status("killed")
    assert status is not None
    assert status.status == "failed"


USER_GRAPH = """
from typing import TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    question: str
    answer: str


def respond(state: State) -> State:
    get_stream_writer()({"heard": state["question"]})
    return {"answer": state["question"].upper()}


def make_graph():
    builder = StateGraph(State)
    builder.add_node("respond", respond)
    builder.add_edge(START, "respond")
    builder.add_edge("respond", END)
    return builder.compile()
"""


async def test_worker_process_runs_a_user_graph_from_the_current_directory(
    tmp_path: Path, workers: list[WorkerProcess], client: Redis, redis_url: str
) -> None:
    (tmp_path / "my_graph.py").write_text(USER_GRAPH)
    env = clean_env(redis_url=redis_url, block_ms="200")
    worker = WorkerProcess(tmp_path, env, "--graph", "my_graph:make_graph")
    workers.append(worker)
    queue, transport = open_side(client, redis_url, "streams")

    await queue.submit("user-1", {"input": {"question": "ping"}, "prompt": "ignored"})
    events = await read_all(transport, "user-1")

    assert [(e.seq, e.type, dict(e.payload)) for e in events[:-1]] == [
        (1, "custom", {"heard": "ping"}),
        (2, "update", {"respond": {"answer": "PING"}}),
    ]
    assert (events[-1].seq, events[-1].type) == (3, "done")
    assert worker.stop() == 0
    assert "graph my_graph:make_graph" in worker.log


def test_bad_graph_spec_exits_with_a_message_naming_the_setting(tmp_path: Path) -> None:
    env = clean_env(redis_url="redis://127.0.0.1:1/0")

    done = subprocess.run(
        [str(RUNSTREAM), "worker", "--graph", "no_such_module_xyz:graph"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 2
    assert "runstream worker: RUNSTREAM_GRAPH / --graph 'no_such_module_xyz:graph': " in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_concurrency_exits_with_a_message_naming_the_setting(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(RUNSTREAM), "worker", "--concurrency", "0"],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 2
    assert "RUNSTREAM_WORKER_CONCURRENCY: Input should be greater than or equal to 1" in done.stderr
    assert "Traceback" not in done.stderr


def test_unreachable_redis_exits_with_the_password_masked(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://:hunter2@127.0.0.1:{port}/0"

    done = subprocess.run(
        [str(RUNSTREAM), "worker"],
        env=clean_env(redis_url=url, socket_connect_timeout="1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert f"runstream worker: cannot reach Redis at redis://:***@127.0.0.1:{port}/0" in done.stderr
    assert f"Redis redis://:***@127.0.0.1:{port}/0" in done.stderr
    assert "hunter2" not in done.stderr
    assert "Traceback" not in done.stderr


EXITING_GRAPH = """
import sys
from typing import TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    how: str


async def leave(state: State) -> State:
    if state["how"] == "exit":
        sys.exit(3)
    if state["how"] == "interrupt":
        raise KeyboardInterrupt("from the graph")
    return {"how": "stayed"}


builder = StateGraph(State)
builder.add_node("leave", leave)
builder.add_edge(START, "leave")
builder.add_edge("leave", END)
graph = builder.compile()
"""


async def test_graph_that_exits_ends_its_job_and_ctrl_c_still_stops_the_worker(
    tmp_path: Path, workers: list[WorkerProcess], client: Redis, redis_url: str
) -> None:
    (tmp_path / "exiting_graph.py").write_text(EXITING_GRAPH)
    env = clean_env(redis_url=redis_url, block_ms="200")
    worker = WorkerProcess(tmp_path, env, "--graph", "exiting_graph:graph")
    workers.append(worker)
    queue, transport = open_side(client, redis_url, "streams")

    await queue.submit("exit", {"input": {"how": "exit"}})
    await queue.submit("interrupt", {"input": {"how": "interrupt"}})
    exited = await read_all(transport, "exit")
    interrupted = await read_all(transport, "interrupt")
    await queue.submit("after", {"input": {"how": "stay"}})
    after = await read_all(transport, "after")

    assert [(e.seq, e.type, dict(e.payload)) for e in exited[:-1]] == [
        (1, "error", {"type": "SystemExit", "message": "3"}),
    ]
    assert [(e.seq, e.type, dict(e.payload)) for e in interrupted[:-1]] == [
        (1, "error", {"type": "KeyboardInterrupt", "message": "from the graph"}),
    ]
    assert [(e.seq, e.type) for e in exited[-1:] + interrupted[-1:]] == [(2, "done"), (2, "done")]
    assert [(e.seq, e.type, dict(e.payload)) for e in after[:-1]] == [
        (1, "update", {"leave": {"how": "stayed"}}),
    ]
    status = await queue.status("exit")
    assert status is not None
    assert (status.status, status.error) == ("failed", "SystemExit: 3")
    assert worker.process.poll() is None
    assert worker.stop(signal.SIGINT) == 0
    assert ": stopped\n" in worker.log
