"""``canopy jobs ...``: operators' commands, straight to the job store (no server needed)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import click
import trio

from canopy.handlers.jobs import JobRequest, JobsService, page_bound, page_end
from canopy.nurseries.jobs import JobState, JobStoreError, UnknownTask

from ..app._capability import Mode
from ._startup import boot_or_exit, find_app, load_or_exit

__all__ = ["jobs_group"]


def _run(
    config_path: str | None,
    action: Callable[[JobsService], Awaitable[Any]],
    *,
    existing: bool = True,
    render: Callable[[Any], str] | None = None,
) -> None:
    """Open the app's store, run ``action`` against it, print what it returns
    (``render``: JSON unless said); exit 1 on failure, in a sentence. The app says which
    tasks there are; nothing of it runs but the store. Only an enqueue makes a store:
    the others (``existing``) look for one, and say where they looked."""
    app, spec = find_app(_given_app(), config_path)
    _config, settings = load_or_exit(config_path, app=app, make_data_dir=not existing)
    path = settings.sqlite_path
    if existing and path is not None and not path.exists():
        click.echo(
            f"canopy: no job store at {path.absolute()}: run this where the server runs, or"
            " give its --config or CANOPY_DATA_DIR",
            err=True,
        )
        sys.exit(1)
    boot_or_exit(app, spec, settings, Mode.ADMIN)
    tree, service = app.runtime.tree, app.jobs.service

    async def main() -> Any:
        # The action's own errors are caught here, inside, so that they do not reach
        # the operator wrapped in the nursery's exception group.
        async with trio.open_nursery() as nursery:
            await nursery.start(tree.run)
            try:
                return await action(service)
            except (JobStoreError, UnknownTask, ValueError) as exc:
                return exc
            finally:
                tree.shutdown()

    result = trio.run(main)
    if isinstance(result, Exception):
        click.echo(f"canopy: {_sentence(result, service)}", err=True)
        sys.exit(1)
    click.echo((render or _as_json)(result))


def _as_json(result: Any) -> str:
    return json.dumps(result, indent=2, default=str)


def _sentence(error: Exception, service: JobsService) -> str:
    """What went wrong, for an operator: no Python class names."""
    if isinstance(error, UnknownTask):
        known = ", ".join(sorted(spec.name for spec in service.registry)) or "none"
        return f"no task {error.args[0]!r}; the app's tasks are {known}"
    return str(error)


def _given_app() -> str | None:
    """``canopy jobs --app MODULE:APP ...``: the group's option, read from a command."""
    context: click.Context | None = click.get_current_context()
    while context is not None:
        if "app" in context.params:
            return context.params["app"]
        context = context.parent
    return None


def _found(job: Any, job_id: str) -> Any:
    if job is None:
        raise ValueError(f"no job {job_id}")
    return job.to_dict()


@click.group("jobs")
@click.option(
    "--app", "app", default=None, metavar="MODULE:APP", help="Whose tasks (default: as serve)."
)
def jobs_group(app: str | None) -> None:
    """Inspect and manage background jobs in the store."""


_config_option = click.option("--config", "config_path", default=None, help="As for serve.")


@jobs_group.command("enqueue")
@click.argument("task")
@click.option("--args", "args_json", default="{}", help="JSON object of arguments.")
@click.option("--delay", type=float, default=0.0, help="Seconds before it may run.")
@click.option("--key", default=None, help="Idempotency key.")
@click.option("--queue", default=None, help="Queue (the task's, if not given).")
@click.option("--priority", type=int, default=None, help="Lower runs first.")
@click.option("--timeout", type=float, default=None, help="Seconds per attempt.")
@click.option("--max-attempts", type=int, default=None, help="Attempts before a dead letter.")
@_config_option
def enqueue(
    task: str,
    args_json: str,
    delay: float,
    key: str | None,
    config_path: str | None,
    **defaults: Any,
) -> None:
    """Enqueue TASK and print the stored job. What is not given is the task's default."""
    try:
        args = json.loads(args_json)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON ({exc})", param_hint="'--args'") from None
    try:
        body = {"task": task, "args": args, "delay": delay}
        body.update({name: value for name, value in defaults.items() if value is not None})
        request = JobRequest.parse(body, key)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    async def action(service: JobsService) -> Any:
        job, _created = await service.enqueue(request)
        return job.to_dict()

    _run(config_path, action, existing=False)


@jobs_group.command("show")
@click.argument("job_id")
@_config_option
def show(job_id: str, config_path: str | None) -> None:
    """Print one job."""

    async def action(service: JobsService) -> Any:
        return _found(await service.store.get(job_id), job_id)

    _run(config_path, action)


@jobs_group.command("cancel")
@click.argument("job_id")
@_config_option
def cancel(job_id: str, config_path: str | None) -> None:
    """Cancel a job: at once if waiting, by its worker within a second if running."""

    async def action(service: JobsService) -> Any:
        return _found(await service.store.cancel(job_id), job_id)

    _run(config_path, action)


@jobs_group.command("retry")
@click.argument("job_id")
@_config_option
def retry(job_id: str, config_path: str | None) -> None:
    """Queue a dead letter again."""

    async def action(service: JobsService) -> Any:
        return _found(await service.store.retry_dead(job_id), job_id)

    _run(config_path, action)


def _page_bound(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    try:
        return page_bound(value) if value is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc).partition(": ")[2]) from None


@jobs_group.command("list")
@click.option("--state", type=click.Choice([s.value for s in JobState]), default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=20)
@click.option(
    "--before", callback=_page_bound, help="the jobs after this one (as the last list said)"
)
@click.option("--json", "as_json", is_flag=True, help="JSON, for scripts (default: a table).")
@_config_option
def list_jobs(
    state: str | None,
    limit: int,
    before: tuple[float, str] | None,
    as_json: bool,
    config_path: str | None,
) -> None:
    """List the most recent jobs, newest first; a full list says on stderr how to go on."""

    async def action(service: JobsService) -> Any:
        jobs = await service.store.list_jobs(JobState(state) if state else None, limit, before)
        if len(jobs) == limit:
            click.echo(f"canopy: more with --before {page_end(jobs[-1])}", err=True)
        return [job.to_dict() for job in jobs]

    _run(config_path, action, render=_as_json if as_json else _table)


def _table(jobs: list[dict[str, Any]]) -> str:
    """One line a job, for people: which, what, how it went, when."""
    rows = [["ID", "TASK", "STATE", "ATTEMPTS", "CREATED", "ERROR"]]
    for job in jobs:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(job["created_at"]))
        error = job["error"].splitlines()[0][:60] if job["error"] else "-"
        attempts = f"{job['attempts']}/{job['max_attempts']}"
        rows.append([job["id"], job["task"], job["state"], attempts, created, error])
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]
        )
        for row in rows
    )
