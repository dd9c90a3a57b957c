"""The supervision tree on a virtual clock: order, restarts, backoff, grace deadlines."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from canopy.nurseries import (
    Backoff,
    RestartIntensity,
    RestartPolicy,
    ServiceState,
    Supervisor,
    SupervisorGaveUp,
)


class Recorder:
    """A service that logs its lifecycle with virtual timestamps."""

    def __init__(
        self,
        name: str,
        events: list[tuple[float, str]],
        *,
        start_delay: float = 0.0,
        crash_after: float | None = None,
        drain_time: float | None = None,
        crashes: int = 10**9,
    ) -> None:
        self.name = name
        self.events = events
        self.start_delay = start_delay
        self.crash_after = crash_after
        self.drain_time = drain_time
        self.crashes_left = crashes
        self._stop = trio.Event()

    def _log(self, what: str) -> None:
        self.events.append((trio.current_time(), f"{self.name}:{what}"))

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._stop = trio.Event()
        self._log("start")
        await trio.sleep(self.start_delay)
        task_status.started()
        self._log("ready")
        try:
            if self.crash_after is not None and self.crashes_left > 0:
                await trio.sleep(self.crash_after)
                self.crashes_left -= 1
                self._log("crash")
                raise RuntimeError(f"{self.name} boom")
            await self._stop.wait()
            self._log("draining")
            await trio.sleep(self.drain_time or 0)
            self._log("drained")
        except trio.Cancelled:
            self._log("cancelled")
            raise


class Drainer(Recorder):
    def shutdown(self) -> None:
        self._stop.set()


def t0_events(events: list[tuple[float, str]]) -> list[tuple[float, str]]:
    return [(round(t, 6), e) for t, e in events]


async def test_start_order_waits_for_readiness_and_stop_is_reverse(autojump_clock: Any) -> None:
    events: list[tuple[float, str]] = []
    sup = Supervisor("root")
    sup.add("db", Drainer("db", events, start_delay=1.0), grace=5)
    sup.add("api", Drainer("api", events, start_delay=2.0), grace=5)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(sup.run)
        assert trio.current_time() - start == pytest.approx(3.0)
        assert sup.state is ServiceState.RUNNING
        assert sup.status().ready
        sup.shutdown()
        assert sup.state is ServiceState.STOPPING
        assert not sup.status().ready
    names = [e for _, e in events]
    assert names == [
        "db:start",
        "db:ready",
        "api:start",
        "api:ready",
        "api:draining",
        "api:drained",
        "db:draining",
        "db:drained",
    ]
    assert sup.state is ServiceState.STOPPED
    assert all(c.state is ServiceState.STOPPED for c in sup.status().children)


async def test_grace_deadline_is_honoured_exactly(autojump_clock: Any) -> None:
    events: list[tuple[float, str]] = []
    sup = Supervisor("root")
    sup.add("quick", Drainer("quick", events, drain_time=2.0), grace=5)
    sup.add("slow", Drainer("slow", events, drain_time=100.0), grace=3)
    sup.add("plain", Recorder("plain", events), grace=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        stop_at = trio.current_time()
        sup.shutdown()
    rel = {e: round(t - stop_at, 6) for t, e in events if t >= stop_at}
    assert rel["plain:cancelled"] == 0.0  # not drainable: cancelled at once
    assert rel["slow:draining"] == 0.0
    assert rel["slow:cancelled"] == 3.0  # grace 3 s, cut off exactly then
    assert rel["quick:draining"] == 3.0
    assert rel["quick:drained"] == 5.0  # finished inside its own grace of 5 s
    assert trio.current_time() - stop_at == pytest.approx(5.0)


async def test_restart_with_backoff_then_give_up(autojump_clock: Any) -> None:
    events: list[tuple[float, str]] = []
    sup = Supervisor(
        "root",
        intensity=RestartIntensity(max_restarts=3, window=60.0),
        backoff=Backoff(initial=1.0, factor=2.0, maximum=10.0),
    )
    sup.add("flaky", Recorder("flaky", events, crash_after=1.0))
    sup.add("other", Drainer("other", events, drain_time=0.5))
    with pytest.RaisesGroup(pytest.RaisesExc(SupervisorGaveUp, match="flaky")):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
    starts = [round(t, 6) for t, e in events if e == "flaky:start"]
    # crash at 1; restart after 1 s backoff (t=2), crash at 3; +2 s -> 5, crash 6; +4 s -> 10
    assert starts == [0.0, 2.0, 5.0, 10.0]
    crash_times = [round(t, 6) for t, e in events if e == "flaky:crash"]
    assert crash_times == [1.0, 3.0, 6.0, 11.0]
    # after giving up, the sibling was still stopped gracefully
    assert ("other:drained") in [e for _, e in events]
    assert sup.state is ServiceState.FAILED
    status = {c.name: c for c in sup.status().children}
    assert status["flaky"].state is ServiceState.FAILED
    assert status["flaky"].restarts == 3
    assert "flaky boom" in (status["flaky"].last_error or "")


async def test_restarts_outside_window_do_not_count(autojump_clock: Any) -> None:
    events: list[tuple[float, str]] = []
    sup = Supervisor(
        "root",
        intensity=RestartIntensity(max_restarts=2, window=5.0),
        backoff=Backoff(initial=0.5, factor=2.0, maximum=0.5),
    )
    sup.add("steady", Recorder("steady", events, crash_after=10.0, crashes=4))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(60)
        assert sup.status().children[0].restarts == 4
        assert sup.state is ServiceState.RUNNING
        sup.shutdown()


async def test_transient_and_temporary_policies(autojump_clock: Any) -> None:
    events: list[tuple[float, str]] = []
    sup = Supervisor("root", backoff=Backoff(initial=1.0))
    sup.add("temp", Recorder("temp", events, crash_after=1.0), restart=RestartPolicy.TEMPORARY)
    sup.add(
        "trans",
        Recorder("trans", events, crash_after=1.0, crashes=1),
        restart=RestartPolicy.TRANSIENT,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(10)
        status = {c.name: c for c in sup.status().children}
        assert status["temp"].state is ServiceState.FAILED
        assert status["temp"].restarts == 0
        assert status["trans"].state is ServiceState.RUNNING
        assert status["trans"].restarts == 1
        assert not sup.status().ready
        sup.shutdown()


async def test_a_transient_child_that_finishes_is_not_restarted(autojump_clock: Any) -> None:
    """TRANSIENT restarts a crash, not a clean exit: the work is done."""

    class OneShot:
        runs = 0

        async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            OneShot.runs += 1
            task_status.started()
            await trio.sleep(1)

    sup = Supervisor("root", backoff=Backoff(initial=1.0))
    sup.add("once", OneShot(), restart=RestartPolicy.TRANSIENT)
    sup.add("steady", Drainer("steady", []))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(10)
        status = {c.name: c for c in sup.status().children}
        assert OneShot.runs == 1
        assert (status["once"].state, status["once"].restarts) == (ServiceState.STOPPED, 0)
        assert status["steady"].state is ServiceState.RUNNING
        assert sup.state is ServiceState.RUNNING
        sup.shutdown()


async def test_first_start_failure_fails_supervisor_and_stops_started_children(
    autojump_clock: Any,
) -> None:
    events: list[tuple[float, str]] = []

    class Broken:
        async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            raise OSError("port in use")

    sup = Supervisor("root")
    sup.add("first", Drainer("first", events))
    sup.add("broken", Broken())
    with pytest.RaisesGroup(pytest.RaisesExc(SupervisorGaveUp, match="OSError.'port in use'")):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
    assert [e for _, e in events] == [
        "first:start",
        "first:ready",
        "first:draining",
        "first:drained",
    ]


async def test_nested_supervisors_report_and_stop_leaves_first(autojump_clock: Any) -> None:
    events: list[tuple[float, str]] = []
    inner = Supervisor("services")
    inner.add("jobs", Drainer("jobs", events))
    inner.add("hub", Drainer("hub", events))
    root = Supervisor("canopy")
    root.add("services", inner, grace=10)
    root.add("http", Drainer("http", events, drain_time=1.0), grace=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        tree = root.status().to_dict()
        assert tree["state"] == "running"
        assert [c["name"] for c in tree["children"][0]["children"]] == ["jobs", "hub"]
        assert root.status().ready
        root.shutdown()
    stops = [e for _, e in events if e.endswith("draining")]
    assert stops == ["http:draining", "hub:draining", "jobs:draining"]


async def test_shutdown_before_run_completes_cleanly(autojump_clock: Any) -> None:
    """Asked to stop before it ran: it starts nothing, waits for nothing, and says so."""
    events: list[tuple[float, str]] = []
    sup = Supervisor("root")
    sup.add("a", Drainer("a", events))
    sup.shutdown()
    await sup.run()
    assert sup.state is ServiceState.STOPPED
    assert events == []  # the child never ran
    assert trio.current_time() == 0
    (child,) = sup.status().children
    assert (child.state, child.restarts) == (ServiceState.STOPPED, 0)


async def test_stop_requested_during_start_up_still_reports_started(autojump_clock: Any) -> None:
    events: list[tuple[float, str]] = []
    sup = Supervisor("root")
    sup.add("slow", Drainer("slow", events, start_delay=5.0))
    sup.add("never", Drainer("never", events))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_shutdown_after, sup, 1.0)
        await nursery.start(sup.run)  # returns instead of raising RuntimeError
    assert [e for _, e in events] == ["slow:start", "slow:ready", "slow:draining", "slow:drained"]
    assert sup.state is ServiceState.STOPPED


async def _shutdown_after(sup: Supervisor, delay: float) -> None:
    await trio.sleep(delay)
    sup.shutdown()


def test_add_rejects_duplicates() -> None:
    sup = Supervisor("root")
    sup.add("a", Drainer("a", []))
    with pytest.raises(ValueError, match="duplicate"):
        sup.add("a", Drainer("a", []))
