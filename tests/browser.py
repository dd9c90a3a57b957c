"""A headless Chromium driven over the DevTools protocol, with trio-websocket.

No Selenium or Playwright: Chromium is started with ``--remote-debugging-port=0``,
prints the browser's DevTools WebSocket URL on stderr, and a page is opened and
inspected with ``Target`` and ``Runtime`` commands over that WebSocket.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

__all__ = ["Page", "chromium"]

START_TIMEOUT = 30.0
WAIT = 10.0


def _executable() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("CI installs chromium (.ci/run) and the browser tests need it")
    pytest.skip("no chromium on this machine (apt-get install chromium)")


class Page:
    """One tab, attached with a flat session on the browser's DevTools connection."""

    def __init__(self, ws: WebSocketConnection, session: str) -> None:
        self._ws = ws
        self._session = session

    async def evaluate(self, expression: str) -> Any:
        result = await _command(
            self._ws,
            "Runtime.evaluate",
            # A promise (an async function's result) is awaited for its value.
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            self._session,
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} raised {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, width: int = 1280, height: int = 900) -> bytes:
        """A PNG of the page at ``width`` x ``height`` CSS pixels."""
        await _command(
            self._ws,
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            self._session,
        )
        await trio.sleep(0.3)  # a layout at the new size
        shot = await _command(self._ws, "Page.captureScreenshot", {"format": "png"}, self._session)
        return base64.b64decode(shot["data"])

    async def goto(self, url: str) -> None:
        """Navigate to ``url`` and wait until it has loaded."""
        await _command(self._ws, "Page.navigate", {"url": url}, self._session)
        with trio.fail_after(WAIT):
            while True:
                try:
                    loaded = await self.evaluate(
                        f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
                    )
                except AssertionError:  # evaluated in the page that was being left
                    loaded = False
                if loaded:
                    return
                await trio.sleep(0.05)

    async def wait_for(self, expression: str) -> Any:
        """Poll ``expression`` until it is truthy (for at most WAIT); return its value."""
        with trio.fail_after(WAIT):
            while True:
                value = await self.evaluate(expression)
                if value:
                    return value
                await trio.sleep(0.05)


_ids = itertools.count(1)


async def _command(
    ws: WebSocketConnection, method: str, params: dict[str, Any], session: str | None = None
) -> dict[str, Any]:
    """Send one command and return its result (events in between are skipped)."""
    request: dict[str, Any] = {"id": next(_ids), "method": method, "params": params}
    if session:
        request["sessionId"] = session
    await ws.send_message(json.dumps(request))
    while True:
        reply = json.loads(await ws.get_message())
        if reply.get("id") == request["id"]:
            if "error" in reply:
                raise AssertionError(f"{method}: {reply['error']}")
            return dict(reply["result"])


@asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Any]:
    """A headless Chromium (ours: ended by its PID on exit); yields ``open_page(url)``."""
    command = [
        _executable(),
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--no-first-run",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        url = await _devtools_url(process)
        async with open_websocket_url(url, max_message_size=64 * 2**20) as ws:

            @asynccontextmanager
            async def open_page(page_url: str) -> AsyncIterator[Page]:
                target = await _command(ws, "Target.createTarget", {"url": page_url})
                attached = await _command(
                    ws, "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
                )
                try:
                    yield Page(ws, attached["sessionId"])
                finally:
                    await _command(ws, "Target.closeTarget", {"targetId": target["targetId"]})

            yield open_page
    finally:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _devtools_url(process: trio.Process) -> str:
    assert process.stderr is not None
    seen = b""
    with trio.fail_after(START_TIMEOUT):
        async for chunk in process.stderr:
            seen += chunk
            found = re.search(rb"DevTools listening on (ws://\S+)", seen)
            if found:
                return found.group(1).decode()
    raise AssertionError(f"chromium did not start: {seen.decode(errors='replace')[-2000:]}")
