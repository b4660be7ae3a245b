"""TUI benchmarks: first frame, a 100,000-line log stream, memory, and key latency under load.

    python bench/run.py tui          # or: python bench/bench_tui.py

- ``tui.first_frame_s``: a real subprocess (``elematrix`` in a pseudo-terminal, 80x24) from
  spawn to the start screen's "Deployments" heading appearing in its output; median of 5.
- ``tui.log_100k_s``: the real engine runs one ``local.sleep`` step that logs 100,000 lines
  (journaled, as in a real run); time from pressing ``r`` until every line reached the
  log pane and the screen was repainted. App under ``run_test`` (headless, 120x40).
- ``tui.log_100k_ui_s``: the same 100,000 lines replayed from pre-built events (no engine,
  no journal): the UI's own share. ``tui.engine_100k_s``: the engine alone, same step,
  journal on, no UI: the engine's share.
- ``tui.log_100k_mb``: growth of the process's peak RSS during that stream (fresh process).
- ``tui.key_latency_ms``: in a second identical stream, keys (tree cursor moves) sent
  through the driver, as a terminal would, every ~50 ms; the slowest one from send until the binding had
  moved the cursor (``tui.key_latency_median_ms`` too). ``tui.keys_answered`` says how many
  keys those rest on; ``tui.keys_unanswered`` how many did not move the cursor within 2 s.
Only local files and a pseudo-terminal are used; nothing is contacted.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LINES = 100_000

RUNBOOK = f"""\
runbook: bench-stream
title: Stream {LINES} log lines
phases:
  - id: stream
    title: Stream
    steps:
      - id: chatty
        title: A chatty step
        action: local.sleep
        with: {{seconds: 0, lines: {LINES}}}
"""


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ELEMATRIX_STATE_DIR=str(tmp / "state"), ELEMATRIX_CONFIG_DIR=str(tmp / "config"),
               ELEMATRIX_SECRET_STORE="file", ELEMATRIX_RUNBOOK_DIR=str(tmp / "runbooks"),
               AWS_CONFIG_FILE=str(tmp / "aws-config"), TERM="xterm-256color")
    return env


def _elematrix() -> list[str]:
    exe = ROOT / ".venv" / "bin" / "elematrix"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("elematrix")
    return [found] if found else [sys.executable, "-m", "elematrix_tui.cli"]


def first_frame_once(tmp: Path) -> float:
    """Spawn elematrix on a pty and wait for the start screen's heading."""
    import fcntl
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    t0 = time.perf_counter()
    proc = subprocess.Popen(_elematrix(), stdin=slave, stdout=slave, stderr=slave,
                            env=_env(tmp), close_fds=True, start_new_session=True)
    os.close(slave)
    seen = b""
    elapsed = float("nan")
    try:
        end = t0 + 20
        while time.perf_counter() < end:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            seen += chunk
            if b"Deployments" in seen:
                elapsed = time.perf_counter() - t0
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        os.close(master)
    if elapsed != elapsed:  # NaN: never painted
        raise RuntimeError(f"no start screen; output was: {seen[-500:]!r}")
    return elapsed


def first_frame(runs: int = 5) -> float:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "runbooks").mkdir()
        first_frame_once(tmp)  # warm the file cache: measure the app, not the disk
        return statistics.median(first_frame_once(tmp) for _ in range(runs))


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def key_latency(app: Any, tree: Any, key: str) -> float | None:
    """Send one key the way a terminal does (through the driver) and time until the
    tree's cursor moved: the binding ran. None if it did not move within 2 s."""
    from textual import events

    before = tree.cursor_line
    k0 = time.perf_counter()
    event = events.Key(key, None)
    event.set_sender(app)
    app._driver.send_message(event)
    while tree.cursor_line == before:
        if time.perf_counter() - k0 > 2:
            return None
        await asyncio.sleep(0.001)
    return time.perf_counter() - k0


class _Replay:
    """A runner that replays pre-built events: the UI's own cost, without the engine's."""

    def __init__(self, sinks: list[Any], events: list[Any]) -> None:
        self.sinks = sinks
        self.events = events

    def run(self) -> int:
        for e in self.events:
            for sink in self.sinks:
                sink(e)
        return 0

    def resume(self, run_id: str) -> int:
        return self.run()

    def request_pause(self) -> None:
        pass

    def cancel(self) -> None:
        pass


async def ui_only(tmp: Path, rb: Path) -> float:
    """Seconds for LINES replayed log lines to reach the pane (no engine, no journal)."""
    from elematrix_tui.engine import events as ev
    from elematrix_tui.ui import catalog
    from elematrix_tui.ui.app import ElematrixApp
    from elematrix_tui.ui.widgets.log_pane import LogPane

    rid = "bench"
    events: list[Any] = [ev.RunStarted(rid, runbook="bench-stream", deployment="replay"),
                         ev.StepStarted(rid, phase_id="stream", step_id="chatty", title="c",
                                        action="local.sleep", attempt=1)]
    events += [ev.LogLine(rid, step_id="chatty", line=f"line {i + 1} of {LINES}")
               for i in range(LINES)]
    events += [ev.StepFinished(rid, phase_id="stream", step_id="chatty", status="ok",
                               attempt=1, duration=0.0),
               ev.RunFinished(rid, status="passed", exit_code=0)]
    catalog.write_settings(tmp / "state", "replay", {"runbook_path": str(rb), "params": {}})
    app = ElematrixApp(tmp / "state", deployment="replay",
                       runner_factory=lambda req: _Replay(req.sinks, events))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        pane = app.screen.query_one(LogPane)
        t0 = time.perf_counter()
        await pilot.press("r")
        while pane.total < LINES or app.screen.running:  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
        await pilot.pause()
        return time.perf_counter() - t0


def engine_only(tmp: Path, rb: Path) -> float:
    """Seconds the engine alone needs to run the step (journal on, sink does nothing)."""
    from elematrix_tui.actions import default_registry
    from elematrix_tui.engine.runner import Runner, RunOptions
    from elematrix_tui.engine.standalone import AutoQuestions
    from elematrix_tui.ui.catalog import load_runbook_file

    runner = Runner(load_runbook_file(rb), deployment="engine-only", state_dir=tmp / "state",
                    questions=AutoQuestions(), sinks=[lambda e: None],
                    registry=default_registry(), options=RunOptions(), runbook_path=rb)
    t0 = time.perf_counter()
    assert runner.run() == 0
    return time.perf_counter() - t0


async def one_stream(tmp: Path, name: str, rb: Path, with_keys: bool) -> dict[str, float]:
    """One run of the chatty step through the real engine into the run screen."""
    from elematrix_tui.ui import catalog
    from elematrix_tui.ui.app import ElematrixApp
    from elematrix_tui.ui.screens.run import RunScreen
    from elematrix_tui.ui.widgets.log_pane import LogPane
    from elematrix_tui.ui.widgets.phase_tree import PhaseTree

    catalog.write_settings(tmp / "state", name, {"runbook_path": str(rb), "params": {}})
    app = ElematrixApp(tmp / "state", deployment=name)
    latencies: list[float] = []
    unanswered = 0
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_until(lambda: not screen.restoring)
        pane = screen.query_one(LogPane)
        tree = screen.query_one(PhaseTree)
        rss0 = _rss_kb("VmRSS")
        streaming = True

        async def press_keys() -> None:
            # Every ~50 ms while the pane is still taking the stream in, whether or not the
            # engine has finished (it writes 100k lines faster than the UI shows them; keys
            # sent only while the engine ran were none in session 5's run).
            nonlocal unanswered
            while streaming:
                # Move towards the other node, whichever line the cursor is on now.
                latency = await key_latency(app, tree, "down" if tree.cursor_line == 0 else "up")
                if latency is None:
                    unanswered += 1  # not answered in 2 s: counted, not hidden
                else:
                    latencies.append(latency)
                await asyncio.sleep(0.05)

        t0 = time.perf_counter()
        await pilot.press("r")
        keys = asyncio.create_task(press_keys()) if with_keys else None
        while pane.total < LINES or screen.running:
            await asyncio.sleep(0.05)
            if time.perf_counter() - t0 > 120:
                raise RuntimeError(f"stream stalled at {pane.total} lines")
        streaming = False
        if keys is not None:
            await keys
        await pilot.pause()
        elapsed = time.perf_counter() - t0
        hwm = _rss_kb("VmHWM")
        assert screen.last_exit == 0, screen.last_exit
    return {"s": elapsed, "mb": max(0, hwm - rss0) / 1024,
            "max_ms": 1000 * max(latencies) if latencies else float("nan"),
            "median_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
            "keys": len(latencies), "unanswered": unanswered}


async def wait_until(cond: Any, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError("timed out")
        await asyncio.sleep(0.01)


async def stream() -> dict[str, Any]:
    """In a fresh process: the real engine streams LINES lines into the run screen, once
    undisturbed (time, memory) and once with keys pressed all along (latency)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-tui-"))
    os.environ.update({k: v for k, v in _env(tmp).items() if k.startswith(("ELEMATRIX", "AWS"))})
    (tmp / "runbooks").mkdir()
    rb = tmp / "runbooks" / "bench-stream.yaml"
    rb.write_text(RUNBOOK)
    plain = await one_stream(tmp, "bench", rb, with_keys=False)
    keys = await one_stream(tmp, "bench-keys", rb, with_keys=True)
    ui_s = await ui_only(tmp, rb)
    engine_s = engine_only(tmp, rb)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"log_100k_ui_s": ui_s, "engine_100k_s": engine_s, "log_100k_s": plain["s"],
            "log_100k_mb": plain["mb"], "key_latency_ms": keys["max_ms"],
            "key_latency_median_ms": keys["median_ms"], "keys": keys["keys"],
            "keys_unanswered": keys["unanswered"], "log_100k_with_keys_s": keys["s"]}


def run() -> list[tuple[str, float, str]]:
    """The figures, as ``bench/run.py`` prints them."""
    out: list[tuple[str, float, str]] = [("tui.first_frame_s", first_frame(), "s")]
    proc = subprocess.run([sys.executable, __file__, "--stream"], capture_output=True,
                          text=True, timeout=300, cwd=str(ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"stream benchmark failed:\n{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    out += [("tui.log_100k_s", res["log_100k_s"], "s"),
            ("tui.log_100k_mb", res["log_100k_mb"], "MB"),
            ("tui.key_latency_ms", res["key_latency_ms"], "ms"),
            ("tui.key_latency_median_ms", res["key_latency_median_ms"], "ms"),
            # How many keys the figures rest on, and how many were not answered in 2 s
            # (those are in neither figure: a max over them would be the timeout).
            ("tui.keys_answered", res["keys"], "keys"),
            ("tui.keys_unanswered", res["keys_unanswered"], "keys"),
            ("tui.log_100k_ui_s", res["log_100k_ui_s"], "s"),
            ("tui.engine_100k_s", res["engine_100k_s"], "s")]
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if "--stream" in sys.argv:
        print(json.dumps(asyncio.run(stream())))
    else:
        for name, value, unit in run():
            print(f"{name}: {value:.3f} {unit}")
