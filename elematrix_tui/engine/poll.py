"""One bounded wait loop for every action that polls (an instance's state, a log group,
a listening port, an HTTP endpoint): probe, wait, probe again, until a value, the
deadline or a cancel.

Every wait the actions do goes through :func:`poll`, so the rules hold everywhere: the
wait is cut to the step's own deadline (``ctx.deadline``), a cancel (``ctx.cancel``)
ends it within one wait, there is always a pause between probes (never a busy loop),
and a timeout says what was awaited, for how long and how many times it was tried.

Pure Python: no SDK, no I/O of its own; the clock and the pause are injectable so the
tests drive it with a fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .action import ActionFailed, StepContext

T = TypeVar("T")

# The shortest pause between two probes, whatever the caller asks: a probe that fails at
# once (connection refused) must not spin a core.
MIN_INTERVAL = 0.01


@dataclass(frozen=True)
class Attempt:
    """Where a wait stands after a probe that found nothing yet (given to ``on_wait``)."""

    number: int
    elapsed: float
    # Seconds to the deadline (the earlier of the timeout and the step's deadline).
    left: float
    # The pause that follows this attempt.
    pause: float


class PollTimeout(ActionFailed):
    """The deadline passed before the probe found what it waits for."""

    def __init__(self, what: str, attempts: int, elapsed: float) -> None:
        super().__init__(f"gave up waiting for {what} after {elapsed:.0f}s and "
                         f"{attempts} attempt(s)")
        self.what = what
        self.attempts = attempts
        self.elapsed = elapsed


class PollCancelled(ActionFailed):
    """The operator interrupted the wait (or the step's timeout set the cancel event)."""

    def __init__(self, what: str, attempts: int, elapsed: float) -> None:
        super().__init__(f"interrupted while waiting for {what}")
        self.what = what
        self.attempts = attempts
        self.elapsed = elapsed


def _no_cancel_wait(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def poll(probe: Callable[[int], T | None], *, what: str, timeout: float,
         interval: float, backoff: float = 1.0, max_interval: float | None = None,
         deadline: float | None = None, cancel: threading.Event | None = None,
         on_wait: Callable[[Attempt], None] | None = None, final_probe: bool = True,
         clock: Callable[[], float] = time.monotonic,
         wait: Callable[[float], bool] | None = None) -> T:
    """Call ``probe(attempt_number)`` until it returns something other than None.

    ``timeout`` (seconds from now) and ``deadline`` (a ``clock()`` instant, the step's
    ``ctx.deadline``) bound the wait; the earlier wins. Between probes it pauses
    ``interval`` seconds, multiplied by ``backoff`` after each attempt up to
    ``max_interval``, never less than :data:`MIN_INTERVAL` and never past the deadline.
    ``final_probe`` True probes once more at the deadline; False gives up as soon as the
    next pause would pass it (a wait whose pauses are long compared with its budget).
    ``on_wait`` hears of every attempt that found nothing (progress reports).

    Raises :class:`PollTimeout` when the deadline passes, :class:`PollCancelled` when
    ``cancel`` is set (checked before each probe and during each pause). Exceptions of
    the probe propagate unchanged: a probe decides itself which errors mean "not yet".
    """
    start = clock()
    end = start + max(timeout, 0.0)
    if deadline is not None:
        end = min(end, deadline)
    pause_for = wait if wait is not None else (cancel.wait if cancel is not None
                                               else _no_cancel_wait)
    pause = max(interval, MIN_INTERVAL)
    number = 0
    while True:
        if cancel is not None and cancel.is_set():
            raise PollCancelled(what, number, clock() - start)
        number += 1
        found = probe(number)
        if found is not None:
            return found
        now = clock()
        left = end - now
        # Less than the shortest pause left counts as the deadline: a pause of a few
        # nanoseconds followed by one more probe would be a busy turn.
        if left < MIN_INTERVAL or (not final_probe and pause > left):
            raise PollTimeout(what, number, now - start)
        this_pause = min(pause, left)
        if on_wait is not None:
            on_wait(Attempt(number, now - start, left, this_pause))
        if pause_for(this_pause):
            raise PollCancelled(what, number, clock() - start)
        pause = max(pause * backoff, MIN_INTERVAL)
        if max_interval is not None:
            pause = min(pause, max(max_interval, MIN_INTERVAL))


def poll_step(ctx: StepContext, probe: Callable[[int], T | None], *, what: str,
              timeout: float, interval: float, backoff: float = 1.0,
              max_interval: float | None = None,
              on_wait: Callable[[Attempt], None] | None = None,
              final_probe: bool = True) -> T:
    """:func:`poll` inside a step: bounded by the step's deadline, ended by its cancel."""
    return poll(probe, what=what, timeout=timeout, interval=interval, backoff=backoff,
                max_interval=max_interval, deadline=ctx.deadline, cancel=ctx.cancel,
                on_wait=on_wait, final_probe=final_probe)
