"""`runstream demo [PROMPT]`: the whole path on one machine, with no set-up.

It uses the Redis at `RUNSTREAM_REDIS_URL` if one answers, else starts one for the run (a
`redis-server` binary found on PATH, else fakeredis's TCP server); its first line says
which. It then starts `runstream worker` and `runstream api` as child processes, submits
the prompt over HTTP, prints the SSE stream's tokens as they arrive and a summary. Every
process and server it started is stopped on the way out, on Ctrl-C, SIGTERM and SIGHUP
too (exit code 128 + the signal's number).

The run has a key prefix of its own (`demo-<random>`), so its job never lands on a shared
Redis's `rs:jobs` queue where another worker could take it; on a configured Redis, the
run's keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from runstream.cli.api import add_backend_options, settings_overrides
from runstream.core.errors import RunstreamError

if TYPE_CHECKING:
    from runstream.core.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "Redis Streams와 리스트의 차이를 알려줘"
STARTUP_TIMEOUT = 30.0
STOP_GRACE = 5.0
PING_TIMEOUT = 1.0
LOG_TAIL_LINES = 20
_LABELS = {"redis-server": "redis-server", "fakeredis": "fakeredis server"}
_CHILD_MAIN = "import sys; from runstream.cli import main; sys.exit(main())"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class DemoError(RunstreamError):
    """The demo could not run to the job's `done`; the message says where it stopped."""


class Stopped(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived: unwind, stopping everything the demo started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="run a worker and the API, submit a prompt, stream the answer"
    )
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT, help="the question to ask")
    add_backend_options(parser)
    parser.add_argument("--json", action="store_true", help="print each event as a JSON line")
    parser.add_argument(
        "--token-rate", type=float, help="demo model tokens per second (RUNSTREAM_DEMO_TOKEN_RATE)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from runstream.core.settings import load_settings

    settings = load_settings(**settings_overrides(args, token_rate="demo_token_rate"))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    output = Output(as_json=args.json)
    with _stop_on_signals():
        try:
            stats = _run_in_stack(args, settings, output)
        except KeyboardInterrupt as stop:
            signum = stop.signum if isinstance(stop, Stopped) else signal.SIGINT
            name = signal.Signals(signum).name
            print(
                f"runstream demo: interrupted by {name}; stopped what it started", file=sys.stderr
            )
            return 128 + signum
    return output.finish(stats)


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn the first stop signal into `Stopped`; ignore the next ones, so the clean-up
    that `Stopped` starts is not cut short."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            logger.warning("demo: %s again; still stopping", signal.Signals(signum).name)
            return
        received.append(signum)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run_in_stack(args: argparse.Namespace, settings: Settings, output: Output) -> Stats:
    from runstream.core.redis_client import masked_url

    redis = choose_redis(settings.redis_url)
    output.redis(redis)
    logger.info(
        "demo: backend %s, list mode %s, Redis %s",
        settings.backend,
        settings.list_mode if settings.backend == "list" else "-",
        masked_url(redis.url),
    )
    prefix = f"demo-{secrets.token_hex(4)}"
    with ExitStack() as stack:
        stack.enter_context(embedded_server(redis))
        if redis.source == "configured":
            stack.callback(remove_keys, redis.url, prefix)
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="runstream-demo-")))
        port = free_port()
        env = child_env(settings.backend, settings.list_mode, redis.url, port)
        env["RUNSTREAM_KEY_PREFIX"] = prefix
        env["RUNSTREAM_DEMO_TOKEN_RATE"] = repr(settings.demo_token_rate)
        children = [stack.enter_context(Child.start(name, env, logs)) for name in ("worker", "api")]
        return asyncio.run(stream_demo(f"http://127.0.0.1:{port}", args.prompt, children, output))


# Redis for the run ------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisForRun:
    url: str
    source: str  # "configured", "redis-server" or "fakeredis"
    note: str
    port: int = 0


def choose_redis(configured_url: str) -> RedisForRun:
    """The configured Redis if it answers PING, else an embedded server to start."""
    from runstream.core.redis_client import masked_url

    problem = ping_problem(configured_url)
    if problem is None:
        note = f"Redis: using the configured server at {masked_url(configured_url)}"
        return RedisForRun(configured_url, "configured", note)

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    source = "redis-server" if shutil.which("redis-server") else "fakeredis"
    note = (
        f"Redis: nothing answers at {masked_url(configured_url)} ({problem}); "
        f"using an embedded {_LABELS[source]} at {url} for this run"
    )
    return RedisForRun(url, source, note, port)


@contextmanager
def embedded_server(redis: RedisForRun) -> Iterator[None]:
    """Run the embedded server `redis` names, if any, until the block ends."""
    binary = shutil.which("redis-server")
    if redis.source == "configured":
        yield
    elif redis.source == "redis-server" and binary is not None:
        with _redis_server(binary, redis.port):
            yield
    else:
        with _fakeredis_server(redis.port):
            yield


def ping_problem(url: str) -> str | None:
    """None if a Redis at `url` answers PING; else why not. Raise if it refuses us."""
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=PING_TIMEOUT, socket_timeout=PING_TIMEOUT
    )
    try:
        client.ping()
    except redis.AuthenticationError as err:
        raise DemoError(f"the Redis at RUNSTREAM_REDIS_URL refused our login: {err}") from err
    except (redis.ConnectionError, redis.TimeoutError) as err:
        return str(err) or type(err).__name__
    except redis.RedisError as err:
        from runstream.core.redis_client import redis_refusal

        raise redis_refusal(url, err) from err
    finally:
        client.close()
    return None


def remove_keys(url: str, prefix: str) -> None:
    """Delete the run's keys (`<prefix>:*`) from the configured Redis."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=STOP_GRACE)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start : start + 1000])
        logger.debug("demo: removed %d keys under %s", len(keys), prefix)
    except redis.RedisError as err:
        logger.warning("demo: could not remove the run's keys (%s:*): %s", prefix, err)
    finally:
        client.close()


@contextmanager
def _redis_server(binary: str, port: int) -> Iterator[None]:
    with tempfile.TemporaryDirectory(prefix="runstream-redis-") as workdir:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", workdir]
        with Child.start_command("redis-server", args, os.environ.copy(), Path(workdir)) as child:
            _wait_for_ping(f"redis://127.0.0.1:{port}/0", child)
            yield


@contextmanager
def _fakeredis_server(port: int) -> Iterator[None]:
    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", port))
    thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(STOP_GRACE)


def _wait_for_ping(url: str, child: Child) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while ping_problem(url) is not None:
        child.check_alive()
        if time.monotonic() > deadline:
            raise DemoError(f"the embedded redis-server did not answer at {url}")
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# Child processes --------------------------------------------------------------------------


def child_env(backend: str, list_mode: str, redis_url: str, port: int) -> dict[str, str]:
    """The environment of the demo's worker and API: our settings, our Redis, our port."""
    env = os.environ.copy()
    env.update(
        RUNSTREAM_REDIS_URL=redis_url,
        RUNSTREAM_BACKEND=backend,
        RUNSTREAM_LIST_MODE=list_mode,
        RUNSTREAM_API_HOST="127.0.0.1",
        RUNSTREAM_API_PORT=str(port),
    )
    return env


@dataclass
class Child:
    """A process the demo started, with its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    @contextmanager
    def start(cls, command: str, env: dict[str, str], logs: Path) -> Iterator[Child]:
        """`runstream <command>` with this Python; stopped when the block ends."""
        args = [sys.executable, "-c", _CHILD_MAIN, command]
        with cls.start_command(f"runstream {command}", args, env, logs) as child:
            yield child

    @classmethod
    @contextmanager
    def start_command(
        cls, name: str, args: list[str], env: dict[str, str], logs: Path
    ) -> Iterator[Child]:
        log_path = logs / f"{name.replace(' ', '-')}.log"
        with log_path.open("wb") as log:
            # A session of its own: Ctrl-C reaches only the demo, which stops its children.
            process = subprocess.Popen(
                args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        child = cls(name, process, log_path)
        logger.debug("demo: started %s (pid %d)", name, process.pid)
        try:
            yield child
        finally:
            child.stop()

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise DemoError(f"{self.name} exited with code {code}; its last output:\n{self.tail()}")

    def tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "  (no output)"
        return "\n".join(f"  {line}" for line in lines[-LOG_TAIL_LINES:]) or "  (no output)"

    def stop(self) -> None:
        """SIGTERM; a second SIGTERM after a second (a worker then ends its running jobs
        with an `error` event instead of finishing them); SIGKILL after `STOP_GRACE`."""
        for signal_, wait in ((signal.SIGTERM, 1.0), (signal.SIGTERM, STOP_GRACE - 1.0)):
            if self.process.poll() is not None:
                break
            self.process.send_signal(signal_)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        if self.process.poll() is None:
            logger.warning("demo: %s still runs after %.0f s; killing it", self.name, STOP_GRACE)
            self.process.kill()
            self.process.wait()
        logger.debug("demo: %s stopped (exit code %s)", self.name, self.process.returncode)


# The job over HTTP ------------------------------------------------------------------------


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    events: int = 0
    tokens: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    first_token_at: float | None = None
    ended_at: float | None = None
    done: bool = False
    error: dict[str, Any] | None = None


async def stream_demo(base_url: str, prompt: str, children: list[Child], output: Output) -> Stats:
    """Submit `prompt` and read its stream, failing fast if a child process dies."""
    import httpx

    timeout = httpx.Timeout(10.0, read=120.0)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as http:
        watchdog = asyncio.create_task(_watch(children))
        job = asyncio.create_task(_run_job(http, prompt, output))
        try:
            await asyncio.wait({watchdog, job}, return_when=asyncio.FIRST_COMPLETED)
            if watchdog.done():
                watchdog.result()  # raises the DemoError naming the process that exited
            return job.result()
        finally:
            for task in (watchdog, job):
                task.cancel()
            await asyncio.gather(watchdog, job, return_exceptions=True)


async def _watch(children: list[Child]) -> None:
    while True:
        for child in children:
            child.check_alive()
        await asyncio.sleep(0.1)


async def _run_job(http: Any, prompt: str, output: Output) -> Stats:
    import httpx
    from httpx_sse import aconnect_sse

    from runstream.core.events import Event

    await _wait_healthy(http)
    stats = Stats()
    response = await http.post("/jobs", json={"prompt": prompt})
    if response.status_code != 202:
        raise DemoError(f"POST /jobs answered {response.status_code}: {response.text}")
    job = response.json()
    logger.info("demo: job %s submitted", job["job_id"])

    try:
        async with aconnect_sse(http, "GET", job["stream_url"]) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                if not sse.data:
                    # httpx-sse dispatches a heartbeat comment as an event with no data once
                    # an id was seen; the SSE spec dispatches nothing for it.
                    continue
                event = Event.from_json(sse.data)
                stats_add(stats, event)
                output.event(event)
    except httpx.HTTPError as err:
        raise DemoError(f"reading {job['stream_url']} failed: {err!r}") from err
    stats.ended_at = time.monotonic()
    return stats


async def _wait_healthy(http: Any) -> None:
    import httpx

    deadline = time.monotonic() + STARTUP_TIMEOUT
    problem = "no answer"
    while time.monotonic() < deadline:
        try:
            response = await http.get("/healthz")
        except httpx.TransportError as err:
            problem = repr(err)
        else:
            if response.status_code == 200:
                return
            problem = f"{response.status_code} {response.text}"
        await asyncio.sleep(0.1)
    raise DemoError(f"the API was not healthy within {STARTUP_TIMEOUT:.0f} s: {problem}")


def stats_add(stats: Stats, event: Any) -> None:
    stats.events += 1
    if event.is_stored:
        stats.first_seq = event.seq if stats.first_seq is None else stats.first_seq
        stats.last_seq = event.seq
    if event.type == "token":
        stats.tokens += 1
        stats.first_token_at = stats.first_token_at or time.monotonic()
    elif event.type == "error":
        stats.error = dict(event.payload)
    elif event.type == "done":
        stats.done = True


# Output -----------------------------------------------------------------------------------


@dataclass
class Output:
    """What the demo prints: tokens and a summary, or one JSON line per event."""

    as_json: bool
    out: IO[str] = field(default_factory=lambda: sys.stdout)

    def redis(self, redis: RedisForRun) -> None:
        if self.as_json:
            line = json.dumps({"redis": {"url": redis.url, "source": redis.source}})
        else:
            line = redis.note
        print(line, file=self.out, flush=True)

    def event(self, event: Any) -> None:
        if self.as_json:
            print(event.to_json(), file=self.out, flush=True)
        elif event.type == "token":
            self.out.write(str(event.payload.get("text", "")))
            self.out.flush()

    def finish(self, stats: Stats) -> int:
        if not self.as_json:
            self.out.write("\n\n")
            self._summary(stats)
        if stats.error is not None:
            raise DemoError(f"the job failed: {json.dumps(stats.error, ensure_ascii=False)}")
        if not stats.done:
            raise DemoError("the stream ended before the job's done event")
        return 0

    def _summary(self, stats: Stats) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="runstream demo", show_header=False)
        seqs = "-" if stats.first_seq is None else f"{stats.first_seq}..{stats.last_seq}"
        ttft = _seconds(stats.first_token_at, stats.started)
        rows = [
            ("events received", str(stats.events)),
            ("tokens", str(stats.tokens)),
            ("seq range", seqs),
            ("time to first token", ttft),
            ("total time", _seconds(stats.ended_at, stats.started)),
            ("done arrived", "yes" if stats.done else "no"),
        ]
        for name, value in rows:
            table.add_row(name, value)
        Console(file=self.out, highlight=False, width=80).print(table)


def _seconds(at: float | None, since: float) -> str:
    return "-" if at is None else f"{at - since:.3f} s"
