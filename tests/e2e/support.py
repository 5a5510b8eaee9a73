"""Real processes for the end-to-end tests: `runstream worker`, `runstream api`, SSE reading."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from httpx_sse import connect_sse

from runstream.core.events import Event

REPO = Path(__file__).resolve().parents[2]
CHILD_MAIN = "import sys; from runstream.cli import main; sys.exit(main())"
STARTUP_TIMEOUT = 20.0
STOP_GRACE = 5.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Proc:
    """A `runstream` child process with its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_GRACE)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Procs:
    """Starts `runstream` commands for one test and stops them all at its end."""

    env: dict[str, str]
    logs: Path
    started: list[Proc] = field(default_factory=list)

    def start(self, command: str, *args: str, env: Mapping[str, str] | None = None) -> Proc:
        name = f"{command}-{len(self.started)}"
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-c", CHILD_MAIN, command, *args],
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        proc = Proc(name, process, log)
        self.started.append(proc)
        return proc

    def worker(self, *args: str, env: Mapping[str, str] | None = None) -> Proc:
        return self.start("worker", *args, env=env)

    def api(self, env: Mapping[str, str] | None = None) -> Proc:
        port = free_port()
        proc = self.start("api", "--port", str(port), env=env)
        proc.port = port
        wait_healthy(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


def wait_healthy(api: Proc) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            raise AssertionError(f"{api.name} exited:\n{api.output()}")
        try:
            if httpx.get(f"{api.base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{api.name} not healthy in time:\n{api.output()}")


def submit(api: Proc, prompt: str, **fields: str) -> str:
    body = {"prompt": prompt, **fields}
    response = httpx.post(f"{api.base_url}/jobs", json=body, timeout=5)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def read_events(
    api: Proc, job_id: str, *, after: int | None = None, stop_after: int | None = None
) -> list[Event]:
    """The job's events as this API streams them; stop after `stop_after` events if given.

    Checks every stored event's SSE `id:` is its seq.
    """
    headers = {} if after is None else {"Last-Event-ID": str(after)}
    events: list[Event] = []
    with (
        httpx.Client(base_url=api.base_url, timeout=httpx.Timeout(5, read=30)) as client,
        connect_sse(client, "GET", f"/stream/{job_id}", headers=headers) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            if not sse.data:
                continue  # a heartbeat comment, which httpx-sse reports once an id was seen
            event = Event.from_json(sse.data)
            assert (sse.event, sse.id) == (event.type, str(event.seq)) or not event.is_stored
            events.append(event)
            if stop_after is not None and len(events) >= stop_after:
                break
    return events


def token_text(events: list[Event]) -> str:
    return "".join(str(e.payload["text"]) for e in events if e.type == "token")


def children_of(pid: int) -> list[int]:
    """Live child processes of `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the command name, which is in parentheses and may hold spaces.
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    return state != "Z"
