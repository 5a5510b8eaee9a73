"""The `runstream bench` command: exit codes, bad input, optional extras."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench.support import DroppingChannel, closed_url, crafted_result
from runstream.bench.plot import plot_cdfs
from runstream.bench.processes import BenchProcessError, require_psutil
from runstream.bench.results import BenchReport
from runstream.bench.scenarios import Channel, open_channel
from runstream.cli import main


def test_cli_writes_json_and_exits_0(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"

    code = main(
        [
            "bench",
            "--smoke",
            "--redis-url",
            redis_url,
            "--backends",
            "streams",
            "--workloads",
            "transport",
            "--json",
            str(out),
        ]
    )

    assert code == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["ok"] is True
    assert [r["scenario"] for r in data["results"]] == [
        "floor-ping",
        "floor-xread",
        "naive",
        "streams",
    ]


def test_cli_exits_1_when_an_event_is_lost(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_open = open_channel

    def dropping(scenario: str, url: str, job_id: str, block_ms: int = 2000) -> Channel:
        return DroppingChannel(real_open(scenario, url, job_id, block_ms), {5})

    monkeypatch.setattr("runstream.bench.runner.open_channel", dropping)

    code = main(
        [
            "bench",
            "--smoke",
            "--redis-url",
            redis_url,
            "--backends",
            "list-poll",
            "--workloads",
            "transport",
        ]
    )

    assert code == 1
    out = capsys.readouterr().out
    assert "FAIL transport list-poll: 1 lost, 0 duplicated, 0 out of order of 31 sent" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backends", "list-poll,kafka"], "--backends: ['kafka'] not in list-poll, "),
        (["--workloads", "speed"], "--workloads: ['speed'] not in transport, e2e, "),
        (["--jobs", "1001"], "--jobs: must be 1..1000, got 1001"),
        (["--rate", "0"], "--rate: must be a positive number, got 0.0"),
        (["--events", "0"], "--events: must be at least 1, got 0"),
    ],
)
def test_cli_rejects_bad_parameters_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "--redis-url", closed_url(), *argv])

    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_plot_without_matplotlib_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)

    code = main(["bench", "--plot", str(tmp_path / "cdf.png"), "--redis-url", closed_url()])

    assert code == 2
    err = capsys.readouterr().err
    assert (
        "--plot needs matplotlib, which is not installed; run: pip install 'runstream[bench]'"
        in err
    )


def test_cli_names_the_redis_it_cannot_reach(capsys: pytest.CaptureFixture[str]) -> None:
    url = closed_url(password="secret")
    port = url.rpartition(":")[2].split("/")[0]

    code = main(["bench", "--smoke", "--redis-url", url])

    assert code == 2
    err = capsys.readouterr().err
    assert f"runstream bench: Redis at redis://:***@127.0.0.1:{port}/0 failed" in err
    assert "secret" not in err


def test_e2e_without_psutil_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)

    with pytest.raises(BenchProcessError, match=r"run: pip install 'runstream\[bench\]'$"):
        require_psutil()


def test_plot_writes_a_png_of_the_latency_cdfs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib comes with the optional bench extra")
    results = [
        crafted_result("transport", "floor-xread", [0.0005, 0.001]),
        crafted_result("transport", "streams", [0.001, 0.002, 0.004]),
        crafted_result("e2e", "streams", [0.002, 0.003]),
    ]
    header = {
        "date": "2026-12-04T15:00:00+00:00",
        "redis_version": "7.0.15",
        "cpu_count": 2,
        "params": {"rate": 50.0, "jobs": 100},
    }
    out = tmp_path / "cdf.png"

    plot_cdfs(BenchReport(header, 0.75, results), out)

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
