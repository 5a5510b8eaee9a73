"""The `runstream api` and `runstream worker` processes an end-to-end run talks to.

Each is started as `python -c 'runstream.cli.main()' <command>` with the backend chosen
by `RUNSTREAM_*` environment variables, and measured with psutil (`bench` extra): CPU
seconds over a window, and resident memory sampled every 100 ms for its peak.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from runstream.bench.plot import INSTALL_HINT
from runstream.bench.probes import ProcessUsage, sampling
from runstream.core.errors import RunstreamError

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
RSS_SAMPLE_INTERVAL = 0.1
_LAUNCH = "import sys; from runstream.cli import main; sys.exit(main())"


class BenchProcessError(RunstreamError):
    """An API or worker process for the benchmark could not be started or measured."""


def require_psutil() -> Any:
    try:
        import psutil
    except ImportError as err:
        raise BenchProcessError(
            f"the e2e and concurrency workloads measure processes with psutil, which is not "
            f"installed; run: {INSTALL_HINT}"
        ) from err
    return psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Service:
    """One runstream process, its log file, and its psutil handle."""

    def __init__(self, command: str, env: Mapping[str, str]) -> None:
        self.command = command
        # Kept open while the process runs; removed by `stop`.
        self.log = tempfile.NamedTemporaryFile(
            prefix=f"runstream-bench-{command}-", suffix=".log", delete=False
        )
        argv = [sys.executable, "-c", _LAUNCH, "--log-level", "WARNING", command]
        self.popen = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.handle = require_psutil().Process(self.popen.pid)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise BenchProcessError(
                f"runstream {self.command} exited with code {self.popen.returncode}; "
                f"its output:\n{self.tail()}"
            )

    def tail(self, lines: int = 20) -> str:
        text = Path(self.log.name).read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        times = self.handle.cpu_times()
        return float(times.user + times.system)

    def rss_mb(self) -> float:
        return float(self.handle.memory_info().rss) / 2**20

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "runstream %s did not stop in %.0f s; killing it", self.command, STOP_TIMEOUT
                )
                self.popen.kill()
                self.popen.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


class ServicePair:
    """A worker and an API on a free port, both on one backend."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.port = free_port()
        api_env = {**env, "RUNSTREAM_API_HOST": "127.0.0.1", "RUNSTREAM_API_PORT": str(self.port)}
        self.worker = Service("worker", env)
        self.api = Service("api", api_env)
        self.base_url = f"http://127.0.0.1:{self.port}"

    @property
    def services(self) -> dict[str, Service]:
        return {"api": self.api, "worker": self.worker}

    async def wait_ready(self) -> None:
        """Wait until the API's /healthz answers 200 (the worker is checked by a warm-up job)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as client:
            while time.monotonic() < deadline:
                for service in self.services.values():
                    service.check_alive()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise BenchProcessError(
            f"runstream api did not answer /healthz within {STARTUP_TIMEOUT:.0f} s; "
            f"its output:\n{self.api.tail()}"
        )

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()


@contextlib.asynccontextmanager
async def process_usage(services: Mapping[str, Service]) -> AsyncIterator[dict[str, ProcessUsage]]:
    """CPU seconds spent and peak RSS reached by each service while the block runs."""
    usage = {name: ProcessUsage(0.0, service.rss_mb()) for name, service in services.items()}
    cpu_start = {name: service.cpu_seconds() for name, service in services.items()}
    try:
        async with sampling(_sample_rss(services, usage)):
            yield usage
    finally:
        for name, service in services.items():
            usage[name].cpu_s = service.cpu_seconds() - cpu_start[name]
            usage[name].rss_peak_mb = max(usage[name].rss_peak_mb, service.rss_mb())


async def _sample_rss(services: Mapping[str, Service], usage: dict[str, ProcessUsage]) -> None:
    while True:
        await asyncio.sleep(RSS_SAMPLE_INTERVAL)
        for name, service in services.items():
            usage[name].rss_peak_mb = max(usage[name].rss_peak_mb, service.rss_mb())
