"""``canopy token``: a signed topics token (docs/PROTOCOL.md), from the configured
``CANOPY_TOPICS_SECRET``, for an operator's dashboard, a support agent or a script."""

from __future__ import annotations

import json
import sys

import click

from canopy.handlers.topics import InvalidToken, TokenIssuer
from canopy.nurseries.fanout import InvalidTopic

from ._startup import find_app, load_or_exit

__all__ = ["token_command"]


@click.command("token")
@click.argument("client")
@click.option(
    "--subscribe", "-s", multiple=True, metavar="PATTERN", help="Topics it may subscribe to."
)
@click.option("--publish", "-p", multiple=True, metavar="PATTERN", help="Topics it may publish to.")
@click.option(
    "--operation",
    "-o",
    "operations",
    multiple=True,
    metavar="GRANT",
    help="An operator's grant: jobs:enqueue:<task pattern>, jobs:admin, orders:admin.",
)
@click.option(
    "--ttl",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    help="Seconds it lasts.",
)
@click.option("--info", "info_json", default=None, help="JSON the server hands the app with it.")
@click.option("--app", "app_given", default=None, metavar="MODULE:APP", help="As for serve.")
@click.option("--config", "config_path", default=None, help="As for 'canopy serve'.")
def token_command(
    client: str,
    subscribe: tuple[str, ...],
    publish: tuple[str, ...],
    operations: tuple[str, ...],
    ttl: float,
    info_json: str | None,
    app_given: str | None,
    config_path: str | None,
) -> None:
    """Print a token for CLIENT that grants the topic patterns and operations given
    (``orders.*``, ``canopy.dashboard``, ``jobs:admin``), signed with
    CANOPY_TOPICS_SECRET; for example ``canopy token ops -s canopy.dashboard`` for the
    dashboard, ``canopy token deploy -o 'jobs:enqueue:shop.*'`` to enqueue shop's tasks."""
    try:
        info = None if info_json is None else json.loads(info_json)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON ({exc})", param_hint="--info") from None
    app, _spec = find_app(app_given, config_path)
    _config, settings = load_or_exit(config_path, app=app)
    if not subscribe and not publish and not operations:
        raise click.UsageError("grant at least one --subscribe, --publish or --operation")
    try:
        token = TokenIssuer(settings.topics_secret).issue(
            client,
            subscribe=subscribe,
            publish=publish,
            ttl=ttl,
            info=info,
            operations=operations,
        )
    except InvalidToken:
        click.echo(
            "canopy: no CANOPY_TOPICS_SECRET is set: there is nothing to sign with", err=True
        )
        sys.exit(2)
    except InvalidTopic as exc:
        raise click.BadParameter(str(exc), param_hint="--subscribe/--publish") from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--operation") from None
    click.echo(token)
