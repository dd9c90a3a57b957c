"""Whatever a client sends, a running server answers with a documented code, stays
healthy, and logs no unhandled error: Hypothesis over HTTP bodies and /ws frames.

One ``canopy serve`` for the module; each example is one request, or one WebSocket
session (a frame, then a ping that must still be answered). Bounded for CI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, wrap_client_stream

from canopy.nurseries import strict_json_loads
from tests.checks.test_error_codes import table_rows
from tests.json_values import json_values
from tests.processes import write_config

HTTP_CODES = {code for _status, code, _when in table_rows("API.md", "## Error codes")}
FRAME_CODES = {code for code, _when in table_rows("PROTOCOL.md", "Error codes (")}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

JOB_FIELDS = ("task", "args", "queue", "priority", "delay", "run_at", "timeout")
JOB_FIELDS += ("max_attempts", "idempotency_key")
ANY_JSON = json_values(non_finite=True)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


BODIES = st.one_of(
    st.binary(max_size=300),  # random bytes, invalid UTF-8 among them
    ANY_JSON.map(_json),  # NaN and the infinities, huge integers, any nesting of any type
    st.integers(0, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.fixed_dictionaries({}, optional=dict.fromkeys(JOB_FIELDS, ANY_JSON)).map(_json),
    st.dictionaries(st.text(max_size=10), ANY_JSON, max_size=4).map(_json),  # duplicate-ish keys
    st.text(max_size=100).map(lambda text: f'{{"a": 1, "a": {json.dumps(text)}}}'.encode()),
)
ROUTES = (
    "/jobs",
    "/jobs/batch",
    "/topics/demo.fuzz/messages",
    "/orders",
    "/support/conversations",
    "/ticker/alerts",
)
FRAME_FIELDS = ("topic", "since", "epoch", "data", "key", "token", "id", "presence")
OPS = ("subscribe", "unsubscribe", "publish", "presence", "ping", "nope")
FRAMES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    ANY_JSON.map(json.dumps),
    st.integers(0, 3000).map(lambda depth: "[" * depth + "]" * depth),
    # Publishes that reach the session's own subscription: what is delivered is read.
    ANY_JSON.map(lambda data: json.dumps({"op": "publish", "topic": "demo.fuzz", "data": data})),
    st.fixed_dictionaries(
        {"op": st.sampled_from(OPS)},
        optional=dict.fromkeys(FRAME_FIELDS, ANY_JSON | st.sampled_from(["demo.fuzz", "demo.*"])),
    ).map(json.dumps),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, list[str]]]:
    """The showcase, serving for the whole module: its port, and its log so far."""
    cwd = tmp_path_factory.mktemp("fuzz")
    write_config(cwd)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CANOPY_TICKER_RATE": "0",
        "CANOPY_ACCESS_LOG": "false",
        "CANOPY_TOPICS_SECRET": "f" * 40,
    }
    argv = [sys.executable, "-m", "canopy", "serve", "--bind", "127.0.0.1:0"]
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    lines: list[str] = []
    port = 0
    for line in process.stdout:
        lines.append(line)
        if '"msg":"listening"' in line:
            port = int(json.loads(line)["bind"].rsplit(":", 1)[1])
            break
    assert port, "".join(lines)
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    reader.start()
    try:
        yield port, lines
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        reader.join(timeout=5)
        process.stdout.close()
    unhandled = [line for line in lines if "unhandled error" in line or "Traceback" in line]
    assert not unhandled, unhandled


@FUZZ
@given(route=st.sampled_from(ROUTES), body=BODIES)
def test_any_body_gets_a_documented_answer(
    server: tuple[int, list[str]], route: str, body: bytes
) -> None:
    port, _log = server
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        answer = client.post(route, content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code < 500, (answer.status_code, answer.text)
        if answer.status_code >= 400:
            assert answer.json()["error"] in HTTP_CODES, answer.text
        assert client.get("/healthz").status_code == 200


@FUZZ
@given(frame=FRAMES)
def test_any_frame_gets_a_documented_answer_and_the_socket_stays_usable(
    server: tuple[int, list[str]], frame: str | bytes
) -> None:
    port, _log = server

    async def session() -> list[dict[str, Any]]:
        """Subscribed to the topic the frames publish to, so that what a publish gets
        delivered is read too; every frame is read as strict JSON (no NaN, no
        Infinity), which is all the server may ever send."""
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        replies: list[dict[str, Any]] = []
        async with stream, trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, "127.0.0.1", "/ws")
            await ws.send_message(json.dumps({"op": "subscribe", "topic": "demo.fuzz"}))
            with trio.fail_after(5):
                assert strict_json_loads(await ws.get_message())["type"] == "subscribed"
            await ws.send_message(frame)
            await ws.send_message(json.dumps({"op": "ping", "id": "probe"}))
            with trio.fail_after(5):
                while True:
                    reply = strict_json_loads(await ws.get_message())
                    replies.append(reply)
                    if reply == {"type": "pong", "id": "probe"}:
                        break
            with trio.move_on_after(0.05):  # a delivery may follow the pong
                while True:
                    replies.append(strict_json_loads(await ws.get_message()))
            nursery.cancel_scope.cancel()
        return replies

    try:
        replies = trio.run(session)
    except ConnectionClosed as closed:  # never, for a frame within the size limit
        raise AssertionError(f"closed by {frame!r}: {closed.reason}") from None
    for reply in replies:
        assert reply["type"] in {"subscribed", "unsubscribed", "published", "presence"} | {
            "message",
            "error",
            "pong",
        }, reply
        if reply["type"] == "error":
            assert reply["code"] in FRAME_CODES, reply
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200


def test_the_tables_the_properties_check_against_are_read() -> None:
    assert {"invalid_json", "invalid_field", "body_too_large"} <= HTTP_CODES
    assert {"invalid_json", "binary_frame", "unknown_op"} <= FRAME_CODES
