"""The tutorial's tests: the app served in-process, on a real socket, with its tree."""

from pathlib import Path

import trio
from shop import ShopSettings, app

from canopy.testing import serve_app


async def test_a_signup_sends_one_welcome_email(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.txt"
    async with serve_app(app, sections={"shop": ShopSettings(str(outbox))}) as served:
        async with served.topics() as watcher, watcher.subscribe("shop.signups") as signups:
            for _ in range(2):  # the same address twice: one email
                response = await served.http.post("/signups", json={"email": "ann@example.com"})
                assert response.status_code == 202
            with trio.fail_after(5):
                event = await signups.receive()
                await served.run_jobs()
        assert event.data == {"email": "ann@example.com"}
        assert outbox.read_text() == "to ann@example.com: welcome!\n"


async def test_a_bad_address_is_a_clear_422() -> None:
    async with serve_app(app) as served:
        response = await served.http.post("/signups", json={"email": "nobody"})
        assert response.status_code == 422
        assert response.json()["error"] == "invalid_email"
