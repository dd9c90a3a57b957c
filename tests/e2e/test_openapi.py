"""/openapi.json: every HTTP route is in it, and schemathesis, run against a real server
from that document, finds no 5xx and no response that breaks its declared schema."""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

import httpx
import trio
from pydantic import BaseModel

from canopy.handlers.topics import TokenIssuer
from canopy.server import load_settings
from canopy.showcase import create_app
from tests.processes import running_server, write_config

SECRET = "openapi-e2e-secret-".ljust(40, "x")
BLUEPRINT_MODULES = (
    "jobs",
    "orders._blueprint",
    "support._blueprint",
    "ticker._blueprint",
    "topics._blueprint",
    "_schema",
)
# Fixed so CI is repeatable; SCHEMATHESIS_SEED=random explores afresh.
SEED = os.environ.get("SCHEMATHESIS_SEED", "20261201")


def _path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


async def test_every_http_route_is_in_the_document(tmp_path: Path) -> None:
    app = create_app().boot(load_settings(None, {"CANOPY_DATA_DIR": str(tmp_path / "var")}))
    routes = {
        (_path(rule.rule), method)
        for rule in app.url_map.iter_rules()
        if not rule.websocket and rule.endpoint not in ("static", "openapi")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    write_config(tmp_path)
    async with running_server(tmp_path, env={"CANOPY_ACCESS_LOG": "false"}) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            document = (await http.get("/openapi.json")).json()
        assert await server.stop() == 0
    documented = {
        (path, method.upper()) for path, operations in document["paths"].items()
        for method in operations
    }  # fmt: skip
    assert routes - documented == set()
    assert len(routes) > 30
    order = document["paths"]["/orders"]["post"]
    assert order["requestBody"]["content"]["application/json"]["schema"]["title"] == "NewOrder"


async def test_schemathesis_finds_no_server_error_and_no_response_off_schema(
    tmp_path: Path,
) -> None:
    write_config(tmp_path)
    env = {"CANOPY_TOPICS_SECRET": SECRET, "CANOPY_ACCESS_LOG": "false", "CANOPY_TICKER_RATE": "5"}
    # One token for every request: it names an agent and may read and publish all
    # topics, so the token-guarded routes are exercised past their 401.
    token = TokenIssuer(SECRET).issue("agent:fuzz", subscribe=["*"], publish=["*"])
    async with running_server(tmp_path, env=env) as server:
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"http://127.0.0.1:{server.port}/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            "25",
            "--request-timeout",
            "10",
            "--max-time",
            "20",
            "--header",
            f"Authorization: Bearer {token}",
            "--no-color",
        ]
        if SEED != "random":
            command += ["--seed", SEED]
        with trio.fail_after(240):
            done = await trio.run_process(
                command, cwd=tmp_path, capture_stdout=True, capture_stderr=True, check=False
            )
        report = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        assert done.returncode == 0, report[-6000:]
        assert re.search(r"\d+ generated, \d+ passed", report), report[-2000:]
        assert await server.stop() == 0


def test_schema_names_are_unique() -> None:
    """The document files models under their class names: two of one name would
    silently share one schema (a history message once turned into a chat message)."""
    names: dict[str, str] = {}
    for module in BLUEPRINT_MODULES:
        loaded = importlib.import_module(f"canopy.handlers.{module}")
        for value in vars(loaded).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == loaded.__name__
            ):
                assert value.__name__ not in names, (value.__name__, names.get(value.__name__))
                names[value.__name__] = loaded.__name__
    assert "TopicMessageOut" in names and "MessageOut" in names
