"""A real browser subscribes through its own WebSocket and sees a message published over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.browser import chromium
from tests.processes import running_server, write_config


async def test_a_page_receives_what_is_published_over_http(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path, env={"CANOPY_ACCESS_LOG": "false"}) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with (
            chromium(tmp_path / "profile") as open_page,
            open_page(f"{base}/demo/topics?topic=demo.browser") as page,
        ):
            # Optional chaining: the page may still be loading.
            status = "document.getElementById('status')?.textContent"
            assert await page.wait_for(f"{status} === 'subscribed'")
            async with httpx.AsyncClient(base_url=base) as http:
                response = await http.post(
                    "/topics/demo.browser/messages", json={"data": {"hello": "browser"}}
                )
            assert response.status_code == 202
            offset = response.json()["offset"]
            items = "[...document.querySelectorAll('#messages li')]"
            received = await page.wait_for(
                f"{items}.map(li => [Number(li.dataset.offset), li.textContent])"
            )
            assert received == [[offset, json.dumps({"hello": "browser"}, separators=(",", ":"))]]
            assert await page.evaluate("document.getElementById('offset').textContent") == str(
                offset
            )
            # Visitors may publish to demo.*: the page's own publish box goes through
            # its connection, and what it publishes arrives like the rest.
            assert await page.evaluate("document.getElementById('publish').hidden") is False
            await page.evaluate(
                "document.getElementById('publish-data').value = '{\"from\": \"page\"}';"
                "document.querySelector('#publish button').click()"
            )
            shown = await page.wait_for("document.getElementById('published').textContent")
            assert shown == f"published at offset {offset + 1}"
            assert await page.wait_for(f'{items}.at(-1)?.textContent === \'{{"from":"page"}}\'')
        async with (
            chromium(tmp_path / "profile2") as open_page,
            open_page(f"{base}/demo/topics?topic=ticker.ABC") as page,
        ):
            # The showcase lets anyone watch ticker.* and publish to none of it: no
            # publish box that would end in a 403.
            assert await page.wait_for(f"{status} === 'subscribed'")
            assert await page.evaluate("document.getElementById('publish').hidden") is True
            grants = "document.querySelector('.grants').textContent"
            assert "ticker.*" in await page.evaluate(grants)
        assert await server.stop() == 0
