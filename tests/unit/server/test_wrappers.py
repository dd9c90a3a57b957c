"""The cheaper stand-ins for Quart's per-request pieces behave as the originals do."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import io
import json
import re
import sys
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestEntityTooLarge

from canopy.handlers._requests import header, read_json
from canopy.server import Settings
from canopy.server.observe._access_log import AccessLog
from canopy.server.pipeline._quart import _MAX_TITLES, _TITLES, CanopyRequest, _title
from canopy.showcase import create_app
from tests.json_values import json_values


def _request(body: bytes, *, content_type: str = "application/json", limit: int = 1024) -> Any:
    headers = Headers({"Content-Type": content_type, "Content-Length": str(len(body))})
    scope = {"headers": [(b"content-length", str(len(body)).encode())]}
    return CanopyRequest(
        "POST",
        "http",
        "/x",
        b"",
        headers,
        "",
        "1.1",
        scope,
        max_content_length=limit,
        send_push_promise=_no_push,
    )


async def _no_push(path: str, headers: Headers) -> None:
    raise AssertionError("no server push here")


async def test_a_complete_body_is_read_without_a_checkpoint() -> None:
    req = _request(b'{"a": 1}')
    req.body.append(b'{"a": 1}')
    req.body.set_complete()
    with trio.CancelScope() as scope:
        scope.cancel()  # upstream's wait would raise Cancelled here
        assert await req.get_data() == b'{"a": 1}'
        assert await req.get_data(as_text=True) == '{"a": 1}'
        assert await req.get_data(cache=False) == b'{"a": 1}'
    assert await req.get_data() == b""  # cache=False cleared it, as upstream does


async def test_a_body_still_arriving_is_waited_for() -> None:
    req = _request(b"hello world")
    got: list[bytes] = []

    async def read() -> None:
        got.append(await req.get_data())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.sleep(0.01)
        req.body.append(b"hello ")
        await trio.sleep(0.01)
        assert got == []
        req.body.append(b"world")
        req.body.set_complete()
    assert got == [b"hello world"]


async def test_a_body_over_the_limit_is_refused() -> None:
    req = _request(b"x" * 2048, limit=1024)
    req.body.set_complete()
    with pytest.raises(RequestEntityTooLarge):
        await req.get_data()


async def test_a_form_is_parsed_under_its_lazily_made_lock() -> None:
    body = b"a=1&b=two"
    req = _request(body, content_type="application/x-www-form-urlencoded")
    req.body.append(body)
    req.body.set_complete()
    assert req._parsing_lock._lock is None
    form = await req.form
    assert form["a"] == "1" and form["b"] == "two"
    assert req._parsing_lock._lock is not None and not req._parsing_lock._lock.locked()


async def test_ensure_async_passes_coroutine_functions_and_wraps_the_rest() -> None:
    app = create_app().boot(Settings(access_log=False))

    async def coroutine_view() -> int:
        return 1

    class Holder:
        async def method(self) -> int:
            return 2

    def sync_view() -> int:
        return 3

    holder = Holder()
    assert app.ensure_async(coroutine_view) is coroutine_view
    assert app.ensure_async(holder.method) == holder.method
    wrapped = app.ensure_async(sync_view)
    assert wrapped is not sync_view
    async with app.app_context():
        assert await wrapped() == 3


def test_an_access_line_is_the_json_of_its_fields() -> None:
    out = io.StringIO()
    log = AccessLog(out)
    path = '/caf\u00e9/"quoted"\\\n\x00\ud800'  # non-ASCII, quotes, escapes, a lone surrogate
    log.request("GET", path, 404, 0.00125, "rid-1")
    log.flush()
    (line,) = out.getvalue().splitlines()
    entry = json.loads(line)
    assert list(entry) == [
        "ts", "level", "logger", "msg", "method", "path", "status", "duration_ms", "request_id"
    ]  # fmt: skip
    assert entry["path"] == path and entry["status"] == 404 and entry["duration_ms"] == 1.25
    assert entry["logger"] == "canopy.access" and entry["request_id"] == "rid-1"
    assert line.isascii()
    # Numbers fixed-point; strings escaped exactly as json.dumps escapes them.
    assert re.fullmatch(r'\{"ts":\d+\.\d{6},.*,"duration_ms":1\.250,.*\}', line)
    for value in entry.values():
        if isinstance(value, str):
            assert json.dumps(value) in line


async def test_json_responses_say_what_json_said() -> None:
    """orjson encodes the common case; whatever it refuses or would encode differently
    goes to ``json`` and Quart's ``default``, as before. NaN is the one change."""

    @dataclasses.dataclass
    class Point:
        x: int

    class Tags(dict[str, Any]):
        pass

    app = create_app().boot(Settings(access_log=False))

    async def body(value: Any) -> str:
        async with app.app_context():
            response: Any = app.json.response(value)
            assert response.mimetype == "application/json"
            return str(await response.get_data(as_text=True))

    value = {"z": 1, "a": [1.5, None, True, "caf\u00e9"], "n": {}}
    assert json.loads(await body(value)) == value and list(json.loads(await body(value))) == [
        "z", "a", "n"
    ]  # fmt: skip
    assert await body({"big": 2**70}) == '{"big":1180591620717411303424}'
    assert await body({1: "a", None: "b"}) == '{"1":"a","null":"b"}'
    assert await body({"when": datetime.date(2026, 12, 2)}) == (
        '{"when":"Wed, 02 Dec 2026 00:00:00 GMT"}'  # Quart's default: an HTTP date
    )
    assert await body({"p": Point(3)}) == '{"p":{"x":3}}'
    assert await body(Tags(a="b")) == '{"a":"b"}'
    assert await body({"x": float("nan")}) == '{"x":null}'
    with pytest.raises(TypeError):
        await body({"s": {1, 2}})


@functools.cache
def _encoder() -> Any:
    return create_app().boot(Settings(access_log=False)).json._encode  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None)
@given(value=json_values(non_finite=False))
def test_a_json_response_reads_back_as_what_json_would_have_written(value: Any) -> None:
    encoded = _encoder()(value)
    text = encoded.decode() if isinstance(encoded, bytes) else encoded
    expected = json.dumps(value)
    assert json.loads(text) == json.loads(expected)
    assert repr(json.loads(text)) == repr(json.loads(expected))  # 1.0 stays a float


async def test_the_request_helpers_read_the_request_past_quarts_proxy() -> None:
    """``read_json`` and ``header`` (every ``POST /jobs``) take the request from behind
    the ``request`` proxy once, not an attribute at a time through it: each attribute
    read through the proxy fails on the proxy first, formatting an AttributeError."""
    app = create_app().boot(Settings(run_jobs=False))
    through_proxy: list[str] = []

    def watch(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.endswith("werkzeug/local.py"):
            through_proxy.append(frame.f_code.co_name)

    async with app.test_request_context(
        "/jobs", method="POST", data=b'{"a": 1}', headers={"Idempotency-Key": "k"}
    ):
        sys.setprofile(watch)
        try:
            body = await read_json()
            key = header(b"idempotency-key")
        finally:
            sys.setprofile(None)
    assert (body, key) == ({"a": 1}, "k")
    assert through_proxy == ["_get_current_object"] * 2


@pytest.mark.parametrize(
    "result",
    [
        {"a": 1},
        [1, "two"],
        ({"job": "x"}, 202),
        ({"job": "x"}, 202, {"Location": "/jobs/x"}),
        ([], 201, {"Content-Type": "application/vnd.x+json", "X-A": "1"}),
        ({"e": 1}, 599),
    ],
)
async def test_a_json_answer_is_the_response_quart_would_have_made(result: Any) -> None:
    """The app builds a view's JSON answer at once (``CompactJSONProvider.answer``):
    the same status, headers in the same order and body as Quart's ``make_response``,
    and the same attributes, so after-request hooks and the sender see no difference."""
    app = create_app().boot(Settings(access_log=False))
    async with app.app_context():
        fast: Any = await app.make_response(result)
        quart: Any = await super(type(app), app).make_response(result)
    assert type(fast) is type(quart)
    assert vars(fast).keys() == vars(quart).keys()
    assert (fast.status, fast.status_code) == (quart.status, quart.status_code)
    assert list(fast.headers.items()) == list(quart.headers.items())
    assert await fast.get_data() == await quart.get_data()
    assert vars(fast.response) == vars(quart.response)


async def test_a_json_answer_refuses_a_header_that_werkzeug_refuses() -> None:
    app = create_app().boot(Settings(access_log=False))
    async with app.app_context():
        with pytest.raises(ValueError, match="newline"):
            await app.make_response(({"a": 1}, 200, {"Location": "/x\r\nSet-Cookie: a=b"}))


def _scope(**changes: Any) -> dict[str, Any]:
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/jobs",
        "root_path": "",
        "query_string": b"a=1",
        "client": ("127.0.0.1", 5000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"x-forwarded-for", b"10.0.0.1"),
            (b"x-forwarded-for", b"10.0.0.2"),
            (b"accept", b"caf\xe9/*"),
        ],
        "extensions": {},
    }
    return scope | changes


@pytest.mark.parametrize(
    "scope",
    [
        _scope(),
        _scope(http_version="1.0"),
        _scope(http_version="1.0", headers=[(b"host", b"example.com")]),
        _scope(client=None, headers=[]),
        _scope(root_path="/api", path="/api/jobs"),
        _scope(root_path="/api", path="/elsewhere"),
        _scope(path="http://example.com/jobs?x=1"),
    ],
)
async def test_a_request_from_the_transport_is_the_request_quart_would_have_made(
    scope: dict[str, Any],
) -> None:
    """``CanopyHTTPConnection`` lists the request's headers at once, without
    ``Headers.add``: the same headers in the same order, and the same request."""
    app = create_app().boot(Settings(access_log=False))
    connection = app.asgi_http_class(app, scope)
    fast = connection._request_from_scope(_no_send)
    quart = connection._create_request_from_scope(_no_send)
    assert type(fast) is type(quart)
    assert list(fast.headers.items()) == list(quart.headers.items())
    forwarded = [v.decode() for k, v in scope["headers"] if k == b"x-forwarded-for"]
    assert fast.headers.getlist("X-Forwarded-For") == forwarded
    for attribute in ("method", "scheme", "path", "root_path", "query_string", "http_version"):
        assert getattr(fast, attribute) == getattr(quart, attribute), attribute
    assert (fast.max_content_length, fast.body_timeout) == (
        quart.max_content_length,
        quart.body_timeout,
    )
    assert fast.scope is quart.scope


def test_header_titles_are_remembered_up_to_a_bound() -> None:
    assert _title(b"content-type") == "Content-Type"
    for n in range(_MAX_TITLES * 2):
        assert _title(b"x-name-%d" % n) == f"X-Name-{n}"
    assert len(_TITLES) <= _MAX_TITLES


async def _no_send(message: Any) -> None:
    raise AssertionError("nothing is sent here")
