"""``canopy serve module:app`` and friends: a user's project served from a fresh venv,
and each mistake a user meets first said in one line with its exit code."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from canopy.handlers.topics import TokenIssuer
from tests.processes import running_server

PROJECT = Path(__file__).parents[1] / "project"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of tests/project: a user's directory, with nothing of Canopy in it."""
    copy = tmp_path / "shop"
    shutil.copytree(PROJECT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


async def test_a_users_project_is_served_and_its_tasks_run_in_a_worker(
    project: Path, fresh_python: Path
) -> None:
    """Its own server.py and handlers/ stay its own; what it declares all runs."""
    env = {"CANOPY_RUN_JOBS": "false", "CANOPY_SHOP_GREETING": "hi"}
    serve = [str(fresh_python), "-m", "canopy", "serve", "shop:app", "--bind", "127.0.0.1:0"]
    async with running_server(project, argv=serve, env=env, showcase=False) as server:
        first = server.logs[0]
        assert (first["msg"], first["app"]) == ("app shop:app", "shop:app")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            hello = await client.get("/hello/ann")
            said = {"said": "hi, ann", "server": "the shop's own server module"}
            assert hello.json() == said
            for path in ("/demo/quote/x", "/orders", "/jobs", "/dashboard", "/ticker/symbols"):
                assert (await client.get(path)).status_code == 404, path
            tree = (await client.get("/readyz")).json()["tree"]
            names = [child["name"] for child in tree["children"][0]["children"]]
            # runs no jobs; takes its workers' events (the memory broker)
            assert names == ["access_log", "hub", "event_relay", "job_store", "price-feed"]

            # its topic rule: anyone may publish to shop.orders.*, nothing else
            published = await client.post("/topics/shop.orders.1/messages", json={"data": 1})
            assert published.status_code == 202, published.text
            refused = await client.post("/topics/other.1/messages", json={"data": 1})
            assert refused.status_code == 403

            # an error in its route: a JSON 500 with the request id, the traceback logged
            boom = await client.get("/boom", headers={"X-Request-ID": "boom-1"})
            assert (boom.status_code, boom.json()["request_id"]) == (500, "boom-1")
            logged = await server.wait_for_log("unhandled error in GET /boom")
            assert logged["request_id"] == "boom-1"
            assert "RuntimeError: a bug in the shop" in logged["exc"]

            job_id = (await client.post("/emails")).json()["job"]
            worker = [str(fresh_python), "-m", "canopy", "worker", "shop:app"]
            async with running_server(
                project, argv=worker, env=env, wait_for="worker started", showcase=False
            ) as worker_process:
                with trio.fail_after(20):
                    sent = await settled(client, f"/emails/{job_id}")
                    await ticked(project / "ticks.log", times=2)
                assert sent == {"state": "succeeded", "result": {"sent_to": "ann@example.com"}}
                assert await worker_process.stop() == 0
        assert await server.stop() == 0


async def settled(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    while True:
        body: dict[str, Any] = (await client.get(path)).json()
        if body["state"] in ("succeeded", "failed"):
            return body
        await trio.sleep(0.05)


async def ticked(log: Path, times: int) -> None:
    """The periodic task, run by the worker, wrote its line ``times`` times."""
    path = trio.Path(log)
    while True:
        if await path.exists() and (await path.read_text()).count("\n") >= times:
            return
        await trio.sleep(0.1)


def canopy(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "canopy", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("module", "app", "code", "said"),
    [
        ("", "nosuch:app", 2, "canopy: app not found: 'nosuch:app': no module named 'nosuch' in "),
        ("app = 1\n", "mod:nope", 2, "'mod:nope': module 'mod' has no attribute 'nope'"),
        ("app = 1\n", "mod:app", 2, "'mod:app': app is a int, not a canopy.App"),
        ("app = 1\n", "mod", 2, "'mod': app is a int, not a canopy.App"),
        ("app = 1\n", "mod:a-b", 2, "expected MODULE:APP or MODULE:FACTORY()"),
        (
            "import canopy\napp = canopy.App('m')\n"
            "@app.task('m.t')\nasync def one(args): ...\n"
            "@app.task('m.t')\nasync def two(args): ...\n",
            "mod:app",
            1,
            "canopy: in the app mod:app: task 'm.t' is declared twice: mod.one (mod.py:3) "
            "and mod.two (mod.py:5)",
        ),
        (
            "import canopy\napp = canopy.App('m')\n"
            "@app.get('/x')\nasync def one(): ...\n"
            "@app.get('/x')\nasync def two(): ...\n",
            "mod:app",
            1,
            "canopy: in the app mod:app: route GET /x is declared twice: by 'one' and by 'two'",
        ),
    ],
)
def test_an_app_that_cannot_be_served_is_one_line(
    tmp_path: Path, module: str, app: str, code: int, said: str
) -> None:
    (tmp_path / "mod.py").write_text(module)
    done = canopy(tmp_path, "serve", app, "--bind", "127.0.0.1:0")
    assert done.returncode == code, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert said in done.stderr


def test_an_exception_importing_the_app_shows_its_traceback(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text("import canopy\napp = canopy.App('m')\n1 / 0\n")
    done = canopy(tmp_path, "serve", "mod:app")
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert 'File "' in done.stderr and 'mod.py", line 3' in done.stderr
    assert done.stderr.rstrip().endswith("ZeroDivisionError: division by zero")


def test_a_factory_canopy_app_and_the_config_file_name_the_app(project: Path) -> None:
    """``module:factory()``, ``$CANOPY_APP`` and ``app =`` in [canopy] each name it; the
    settings listed are the app's and its capabilities', and nothing else's."""
    (project / "factory.py").write_text(
        "import canopy\nfrom shop import ShopSettings\n\n"
        "def make():\n    return canopy.App('made', settings=ShopSettings)\n"
    )
    listed = canopy(project, "settings", "--app", "factory:make()")
    assert "CANOPY_MADE_GREETING" in listed.stdout
    listed = canopy(project, "settings", env={"CANOPY_APP": "shop:app"})
    assert "CANOPY_SHOP_GREETING" in listed.stdout
    assert "CANOPY_TICKER_RATE" not in listed.stdout
    (project / "hypercorn.toml").write_text('[canopy]\napp = "shop:app"\n')
    listed = canopy(project, "settings")
    assert "CANOPY_SHOP_GREETING" in listed.stdout
    showcase = canopy(project / "handlers", "settings")  # no app named anywhere
    assert "CANOPY_TICKER_RATE" in showcase.stdout
    assert "CANOPY_ORDERS_PAYMENT_LATENCY" in showcase.stdout


def test_canopy_jobs_uses_the_apps_tasks(project: Path) -> None:
    enqueued = canopy(
        project, "jobs", "--app", "shop:app", "enqueue", "shop.email", "--args", '{"to": "x"}'
    )
    assert enqueued.returncode == 0, enqueued.stderr
    assert json.loads(enqueued.stdout)["task"] == "shop.email"
    unknown = canopy(project, "jobs", "--app", "shop:app", "enqueue", "demo.echo")
    assert unknown.returncode == 1
    assert "demo.echo" in unknown.stderr


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ("keep_alive_timout = 5\n", "keep_alive_timout: unknown Hypercorn setting in"),
        ("[canopy.shop]\ngreting = 1\n", "[canopy.shop] greting: unknown setting in"),
        ("[canopy.ticker]\nrate = 1\n", "[canopy] ticker: unknown setting in"),
    ],
)
def test_a_misspelt_setting_is_one_line(project: Path, config: str, said: str) -> None:
    (project / "c.toml").write_text(config)
    done = canopy(project, "serve", "shop:app", "--config", "c.toml")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert said in done.stderr


def test_a_port_in_use_is_one_line_naming_it(project: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = canopy(project, "serve", "shop:app", "--bind", address)
    assert done.returncode == 1
    assert done.stderr == f"canopy: cannot listen on {address}: Address already in use\n"
    assert "Traceback" not in done.stdout


def test_canopy_token_mints_what_the_server_verifies(tmp_path: Path) -> None:
    secret = "s" * 40
    env = {"CANOPY_TOPICS_SECRET": secret}
    done = canopy(tmp_path, "token", "ops", "-s", "canopy.dashboard", "-p", "ops.*", env=env)
    assert done.returncode == 0, done.stderr
    grants = TokenIssuer(secret).verify(done.stdout.strip())
    assert (grants.client, grants.subscribe, grants.publish) == (
        "ops",
        ("canopy.dashboard",),
        ("ops.*",),
    )
    unsigned = canopy(tmp_path, "token", "ops", "-s", "a", env={"CANOPY_TOPICS_SECRET": ""})
    assert unsigned.returncode == 2
    assert "no CANOPY_TOPICS_SECRET" in unsigned.stderr
    bad = canopy(tmp_path, "token", "ops", "-s", "a..b", env=env)
    assert bad.returncode == 2
    assert "invalid topic 'a..b'" in bad.stderr
    operator = canopy(tmp_path, "token", "deploy", "-o", "jobs:enqueue:shop.*", env=env)
    assert operator.returncode == 0, operator.stderr
    grants = TokenIssuer(secret).verify(operator.stdout.strip())
    assert grants.may("jobs:enqueue:shop.email") and not grants.may("jobs:admin")
    refused = canopy(tmp_path, "token", "deploy", "-o", "admin", env=env)
    assert refused.returncode == 2
    assert "not an operation grant: 'admin'" in refused.stderr


def test_a_data_dir_that_cannot_be_made_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    done = canopy(tmp_path, "serve", env={"CANOPY_DATA_DIR": str(tmp_path / "file" / "var")})
    assert done.returncode == 2
    assert done.stderr.startswith("canopy: invalid setting: CANOPY_DATA_DIR: cannot make ")
    assert done.stderr.count("\n") == 1


async def test_hypercorn_serves_a_users_app_with_its_tree(project: Path) -> None:
    """Under Hypercorn's own worker the app assembles itself in its lifespan, from
    the same config file and environment."""
    (project / "hypercorn.toml").write_text('bind = ["127.0.0.1:0"]\nworker_class = "trio"\n')
    argv = [sys.executable, "-m", "hypercorn", "--config", "hypercorn.toml", "shop:app"]
    env = {"CANOPY_SHOP_GREETING": "hey"}
    async with running_server(
        project, argv=argv, env=env, started_line="Running on http://", showcase=False
    ) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/hello/bo")).json()["said"] == "hey, bo"
            tree = (await client.get("/readyz")).json()["tree"]
            assert "price-feed" in [child["name"] for child in tree["children"][0]["children"]]
        # SIGTERM: Hypercorn stops the worker process it spawned (a kill would orphan it)
        assert await server.stop() == 0


async def test_without_an_app_the_showcase_is_served_and_says_so(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "canopy", "serve", "--bind", "127.0.0.1:0"]
    async with running_server(tmp_path, argv=argv) as server:
        first = server.logs[0]
        assert first["msg"] == (
            "app Canopy's showcase (every capability); anyone may, without a token: "
            "jobs:enqueue:*, jobs:admin, orders:admin (CANOPY_ANONYMOUS_OPERATIONS)"
        )
        assert first["level"] == "warning"
        assert server.logs[0]["app"] == "canopy.showcase:app"
        assert await server.stop() == 0
