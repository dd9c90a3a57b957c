"""bench/load.py against a real server: what it reports agrees with the server's own
/metrics (within 5 %), --plot draws, and a target that is not loopback is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import running_server, write_config

LOAD = Path(__file__).parents[2] / "bench" / "load.py"


async def counter(base: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples with ``labels``, read from /metrics."""
    async with httpx.AsyncClient(base_url=base) as client:
        text = (await client.get("/metrics")).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def bench(base: str, *args: str) -> dict[str, Any]:
    argv = [sys.executable, str(LOAD), *args, "--url", base, "--json"]
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("scenario", "metric", "labels"),
    [
        ("http-get", "canopy_http_requests_total", {"route": "/demo/hello", "status": "200"}),
        ("jobs", "canopy_jobs_total", {"task": "demo.echo", "event": "succeeded"}),
        ("orders", "canopy_jobs_total", {"task": "orders.confirm", "event": "succeeded"}),
        ("ws", "canopy_fanout_delivered_total", {}),
    ],
)
async def test_what_bench_reports_agrees_with_the_servers_metrics(
    tmp_path: Path, scenario: str, metric: str, labels: dict[str, str]
) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path, env={"CANOPY_ACCESS_LOG": "false"}) as server:
        base = f"http://127.0.0.1:{server.port}"
        before = await counter(base, metric, **labels)
        extra = ["--subscribers", "20", "--rate", "200"] if scenario == "ws" else []
        summary = await bench(base, scenario, "--duration", "2", "--concurrency", "8", *extra)
        await trio.sleep(0.5)  # the server finishes what was in flight at the deadline
        counted = await counter(base, metric, **labels) - before
        assert summary["errors"] == {}
        assert summary["operations"] > 50
        assert abs(summary["operations"] - counted) <= 0.05 * counted, (summary, counted)
        assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]
        assert await server.stop() == 0


async def test_plot_and_refusals(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path, env={"CANOPY_ACCESS_LOG": "false"}) as server:
        base = f"http://127.0.0.1:{server.port}"
        png = tmp_path / "run.png"
        await bench(base, "http-get", "--duration", "1", "--requests", "200", "--plot", str(png))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert await server.stop() == 0
    remote = await trio.run_process(
        [sys.executable, str(LOAD), "http-get", "--url", "http://192.0.2.1:8000"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert remote.returncode == 2 and b"--allow-remote" in remote.stderr


def test_plot_without_matplotlib_stops_before_the_load(tmp_path: Path) -> None:
    hide = (
        "import runpy, sys; sys.modules['matplotlib'] = None; "
        f"sys.path.insert(0, {str(LOAD.parent)!r}); "
        "sys.argv = ['load.py', 'http-get', '--plot', 'out.png']; "
        f"runpy.run_path({str(LOAD)!r}, run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "--plot needs matplotlib: pip install matplotlib" in result.stderr
    assert result.stdout == ""
