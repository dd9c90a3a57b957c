"""Load and stress a running Canopy: ``python bench/load.py SCENARIO [options]``.

The engine is ``_loadgen``. A tool of the repository, like the other benchmarks, not
of the installed server: a deployment carries no load generator, nor its ``rich``.

A live progress bar with the current rates while it runs (on stderr, with ``rich``),
then a summary table; ``--json`` prints the summary as JSON on stdout instead, and
``--plot out.png`` draws latency and throughput over time (matplotlib, imported only
then).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import trio
from _loadgen import SCENARIOS, LoadError, Plan, Result, check_target, run

__all__ = ["bench_command"]

REFRESH = 0.5


@click.command("load.py")
@click.argument("scenario", type=click.Choice(SCENARIOS))
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The server.")
@click.option("--path", default="/demo/hello", show_default=True, help="For http-get/post.")
@click.option("--body", default="{}", show_default=True, help="JSON body for http-post.")
@click.option("--duration", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True)
@click.option(
    "--requests",
    type=click.IntRange(1),
    default=1_000_000,
    show_default=True,
    help="Most operations to send (the run ends at this or --duration).",
)
@click.option("--concurrency", type=click.IntRange(1, 10_000), default=16, show_default=True)
@click.option("--rate", type=click.FloatRange(0.1), default=None, help="Operations/s (open loop).")
@click.option("--subscribers", type=click.IntRange(1, 20_000), default=100, show_default=True)
@click.option("--allow-remote", is_flag=True, help="Allow a target that is not loopback.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Save a PNG chart.")
def bench_command(
    scenario: str,
    url: str,
    path: str,
    body: str,
    duration: float,
    requests: int,
    concurrency: int,
    rate: float | None,
    subscribers: int,
    allow_remote: bool,
    as_json: bool,
    plot: str | None,
) -> None:
    """Drive SCENARIO against a running server and report throughput, latency and errors.

    Scenarios: http-get, http-post, jobs (enqueue demo.echo, wait until it succeeded),
    orders (place an order, wait until it is confirmed), ws (WebSocket subscribers and
    an HTTP publisher; latency is publish to delivery).
    """
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:  # said now, not after the whole run
            raise click.UsageError("--plot needs matplotlib: pip install matplotlib") from None
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--body") from None
    plan = Plan(
        scenario, url.rstrip("/"), path, payload, duration, requests, concurrency, rate,
        subscribers, allow_remote=allow_remote,
    )  # fmt: skip
    try:
        check_target(plan.url, plan.allow_remote)
    except LoadError as exc:
        click.echo(f"load.py: {exc}", err=True)
        sys.exit(2)
    result = Result(scenario)
    try:
        trio.run(_run_with_progress, plan, result, not as_json)
    except LoadError as exc:
        click.echo(f"load.py: {exc}", err=True)
        sys.exit(2)
    summary = result.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_table(summary)
    if plot:
        _plot(result, plot)


async def _run_with_progress(plan: Plan, result: Result, show: bool) -> None:
    if not show:
        await run(plan, result)
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[now]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        task = progress.add_task(plan.scenario, total=plan.duration, now="")
        async with trio.open_nursery() as nursery:

            async def update() -> None:
                while True:
                    await trio.sleep(REFRESH)
                    progress.update(task, completed=trio.current_time() - began, now=_now(result))

            began = trio.current_time()
            nursery.start_soon(update)
            await run(plan, result)
            nursery.cancel_scope.cancel()


def _now(result: Result) -> str:
    """The last whole second: operations/s, errors and p99."""
    if len(result.per_second) < 2:
        return f"{result.operations:,} ops"
    _index, errors, latencies = result.per_second[-2]
    p99 = sorted(latencies)[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else 0.0
    return f"{len(latencies):,}/s  p99 {p99:.1f} ms  errors {errors}  total {result.operations:,}"


def _print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"load.py {summary['scenario']}")
    for column in ("operations", "throughput/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "late"):
        table.add_column(column, justify="right")
    latency = summary["latency_ms"]
    table.add_row(
        f"{summary['operations']:,}",
        f"{summary['throughput']:,.1f}",
        *(
            f"{latency[k]:.2f}" if latency[k] is not None else "-"
            for k in ("p50", "p90", "p99", "max")
        ),
        str(summary["late"]),
    )
    console = Console()
    console.print(table)
    if summary["errors"]:
        errors = Table(title="errors")
        errors.add_column("kind")
        errors.add_column("count", justify="right")
        for kind, count in sorted(summary["errors"].items(), key=lambda item: -item[1]):
            errors.add_row(kind, f"{count:,}")
        console.print(errors)
    else:
        console.print("no errors")


def _plot(result: Result, target: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    seconds = [index for index, _errors, _latencies in result.per_second]
    throughput = [len(latencies) for _index, _errors, latencies in result.per_second]
    errors = [errors for _index, errors, _latencies in result.per_second]

    def quantile(latencies: list[float], q: float) -> float | None:
        if not latencies:
            return None
        ordered = sorted(latencies)
        return 1000 * ordered[int(q * (len(ordered) - 1))]

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        top.plot(seconds, [quantile(lat, q) for _i, _e, lat in result.per_second], label=label)
    top.set_ylabel("latency (ms)")
    top.legend()
    top.set_title(f"load.py {result.scenario}")
    bottom.plot(seconds, throughput, label="operations/s")
    bottom.plot(seconds, errors, label="errors/s")
    bottom.set_xlabel("seconds")
    bottom.set_ylabel("per second")
    bottom.legend()
    figure.tight_layout()
    figure.savefig(target)
    plt.close(figure)


if __name__ == "__main__":
    bench_command()
