"""The one polling helper: deadline, cancel, pacing, backoff, progress (a fake clock)."""

from __future__ import annotations

import threading
import time

import pytest

from elematrix_tui.engine.poll import MIN_INTERVAL, Attempt, PollCancelled, PollTimeout, poll


class FakeClock:
    """A monotonic clock that moves only when the code under test pauses.

    ``wait`` behaves like ``threading.Event.wait``: True (and no time passes beyond the
    moment of the cancel) when the event is set, else False after the whole pause.
    """

    def __init__(self, cancel: threading.Event | None = None,
                 cancel_at: float | None = None) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []
        self.cancel = cancel
        self.cancel_at = cancel_at

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        assert seconds > 0, "a pause of zero is a busy loop"
        self.pauses.append(seconds)
        if self.cancel is not None and self.cancel_at is not None \
                and self.now + seconds >= self.cancel_at:
            self.now = max(self.now, self.cancel_at)
            self.cancel.set()
            return True
        self.now += seconds
        return False


def test_returns_the_first_value_the_probe_finds() -> None:
    clock = FakeClock()
    seen: list[int] = []

    def probe(n: int) -> str | None:
        seen.append(n)
        return "up" if n == 3 else None

    assert poll(probe, what="x", timeout=60, interval=2, clock=clock,
                wait=clock.wait) == "up"
    assert seen == [1, 2, 3] and clock.pauses == [2, 2]


def test_the_deadline_is_honoured_and_the_timeout_says_what_was_awaited() -> None:
    clock = FakeClock()
    with pytest.raises(PollTimeout) as e:
        poll(lambda n: None, what="instance i-1 running", timeout=10, interval=3,
             clock=clock, wait=clock.wait)
    # Pauses 3, 3, 3, then the last 1 s to the deadline, and one final probe there.
    assert clock.pauses == [3, 3, 3, 1]
    assert clock.now == 1010.0
    assert e.value.attempts == 5
    assert "instance i-1 running" in e.value.message and "5 attempt(s)" in e.value.message


def test_the_step_deadline_cuts_the_timeout() -> None:
    clock = FakeClock()
    with pytest.raises(PollTimeout):
        poll(lambda n: None, what="x", timeout=600, interval=5, deadline=1012.0,
             clock=clock, wait=clock.wait)
    assert clock.now == 1012.0 and sum(clock.pauses) == 12


def test_without_a_final_probe_it_gives_up_before_a_pause_that_would_overshoot() -> None:
    clock = FakeClock()
    with pytest.raises(PollTimeout) as e:
        poll(lambda n: None, what="x", timeout=10, interval=4, final_probe=False,
             clock=clock, wait=clock.wait)
    assert clock.pauses == [4, 4] and e.value.attempts == 3


def test_cancel_is_honoured_during_a_pause() -> None:
    cancel = threading.Event()
    clock = FakeClock(cancel, cancel_at=1007.0)
    probes: list[int] = []
    with pytest.raises(PollCancelled) as e:
        poll(lambda n: probes.append(n), what="ssm agent online", timeout=600, interval=5,
             cancel=cancel, clock=clock, wait=clock.wait)
    assert probes == [1, 2] and clock.now == 1007.0
    assert "interrupted while waiting for ssm agent online" in e.value.message


def test_a_cancel_set_before_the_wait_probes_nothing() -> None:
    cancel = threading.Event()
    cancel.set()
    clock = FakeClock()
    with pytest.raises(PollCancelled):
        poll(lambda n: pytest.fail("probed after cancel"), what="x", timeout=5, interval=1,
             cancel=cancel, clock=clock, wait=clock.wait)


def test_no_busy_loop_even_with_a_zero_interval() -> None:
    clock = FakeClock()
    with pytest.raises(PollTimeout) as e:
        poll(lambda n: None, what="x", timeout=1, interval=0, clock=clock, wait=clock.wait)
    assert min(clock.pauses) >= MIN_INTERVAL
    assert e.value.attempts <= 1 / MIN_INTERVAL + 1


def test_backoff_grows_the_pause_up_to_its_cap() -> None:
    clock = FakeClock()
    with pytest.raises(PollTimeout):
        poll(lambda n: None, what="x", timeout=100, interval=1, backoff=2, max_interval=10,
             clock=clock, wait=clock.wait)
    assert clock.pauses[:6] == [1, 2, 4, 8, 10, 10]


def test_progress_hears_every_attempt_that_found_nothing() -> None:
    clock = FakeClock()
    heard: list[Attempt] = []
    poll(lambda n: n if n == 3 else None, what="x", timeout=60, interval=5,
         on_wait=heard.append, clock=clock, wait=clock.wait)
    assert [(a.number, a.elapsed, a.pause) for a in heard] == [(1, 0, 5), (2, 5, 5)]
    assert heard[1].left == 55


def test_probe_errors_propagate() -> None:
    clock = FakeClock()

    def probe(n: int) -> None:
        raise ValueError("AccessDenied")

    with pytest.raises(ValueError, match="AccessDenied"):
        poll(probe, what="x", timeout=5, interval=1, clock=clock, wait=clock.wait)


def test_real_clock_and_real_cancel_end_promptly() -> None:
    # The defaults: time.monotonic and the event's own wait; a cancel from another thread
    # ends a long pause at once.
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(PollCancelled):
        poll(lambda n: None, what="x", timeout=30, interval=10, cancel=cancel)
    assert time.monotonic() - t0 < 2


def test_actions_wait_only_through_the_helper() -> None:
    # One home for the wait rules: a sleep or a cancel-wait of its own in an action module
    # would bring back a loop that may ignore the deadline or the cancel.
    import re
    from pathlib import Path

    import elematrix_tui.actions as actions

    root = Path(actions.__file__).parent
    own = re.compile(r"\btime\.sleep\(|\bcancel\.wait\(")
    found = [f"{p.relative_to(root)}:{n}" for p in sorted(root.rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1) if own.search(line)]
    assert found == []


def test_teardown_dependency_retry_gives_the_dependency_error_or_the_cancel(
        tmp_path: object) -> None:
    from pathlib import Path

    from elematrix_tui.actions.aws_teardown import _retry_dependency
    from elematrix_tui.engine.action import ActionFailed
    from elematrix_tui.engine.standalone import StandaloneContext

    ctx = StandaloneContext(deployment_dir=Path(str(tmp_path)))
    calls: list[int] = []

    def in_use() -> None:
        calls.append(1)
        raise ActionFailed("DependencyViolation: sg-1 has a dependent object")

    # max_wait 0: one try, then the dependency error itself (what still holds it).
    with pytest.raises(ActionFailed, match="DependencyViolation"):
        _retry_dependency(ctx, in_use, "security group sg-1", 0)
    assert calls == [1]
    # Another error is not retried.
    with pytest.raises(ActionFailed, match="AccessDenied"):
        _retry_dependency(ctx, lambda: (_ for _ in ()).throw(ActionFailed("AccessDenied")),
                          "security group sg-1", 60)
    # Cancelled before the first try: the cancel, not a crash.
    ctx.cancel.set()
    with pytest.raises(PollCancelled):
        _retry_dependency(ctx, in_use, "security group sg-1", 60)
    assert calls == [1]
