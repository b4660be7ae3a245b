"""The engine's ``Questions`` protocol answered by modal screens.

The engine calls these methods from its own thread and blocks. Each call schedules a
modal on the UI thread (``call_from_thread``) and waits on a Future that the modal's
dismiss callback resolves. :meth:`TuiQuestions.abort` answers every open question
with a refusal, so quitting never leaves the engine thread waiting forever.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from textual.app import App
from textual.screen import ModalScreen

from ..engine.errors import PromptCancelled
from .screens.modals import ApproveModal, ChooseModal, ConfirmModal, SecretModal

T = TypeVar("T")


class TuiQuestions:
    """Implements ``engine.action.Questions`` for the Textual app."""

    def __init__(self, app: App[Any], deployment: str,
                 before_ask: Callable[[], None] | None = None) -> None:
        self.app = app
        self.deployment = deployment
        self.before_ask = before_ask
        self._lock = threading.Lock()
        self._pending: dict[Future[Any], Any] = {}
        self._aborted = threading.Event()

    def _ask(self, make_screen: Callable[[], ModalScreen[T]], refusal: T) -> T:
        if self._aborted.is_set():
            return refusal
        fut: Future[T] = Future()
        with self._lock:
            self._pending[fut] = refusal

        def resolve(answer: T | None) -> None:
            if not fut.done():
                fut.set_result(refusal if answer is None else answer)

        def show() -> None:
            if self.before_ask is not None:
                # Let the screen catch up with every event before the operator must decide.
                self.before_ask()
            self.app.push_screen(make_screen(), callback=resolve)

        try:
            self.app.call_from_thread(show)
            while True:
                try:
                    return fut.result(timeout=0.25)
                except FutureTimeout:
                    if self._aborted.is_set():
                        return refusal
        except RuntimeError:
            # The app is gone (quit while the engine asked): the safe answer is no.
            return refusal
        finally:
            with self._lock:
                self._pending.pop(fut, None)

    def abort(self) -> None:
        """Refuse every open and future question (the operator is quitting)."""
        self._aborted.set()
        with self._lock:
            for fut, refusal in list(self._pending.items()):
                if not fut.done():
                    fut.set_result(refusal)

    def reset(self) -> None:
        self._aborted.clear()

    # -- the protocol -----------------------------------------------------------
    def confirm(self, step_id: str, title: str, changes: list[str], *, destructive: bool,
                type_to_confirm: str | None) -> bool:
        """Ask to go ahead with ``changes``; destructive ones need the deployment name typed."""
        word = type_to_confirm or (self.deployment if destructive else None)
        return self._ask(lambda: ConfirmModal(step_id, title, changes, destructive=destructive,
                                              type_to_confirm=word), False)

    def approve(self, step_id: str, prompt: str) -> tuple[bool, str, str]:
        """Ask for an approval; return (approved, who, comment)."""
        return self._ask(lambda: ApproveModal(step_id, prompt), (False, "", ""))

    def secret(self, name: str, help: str) -> str:
        """Ask for a secret value (masked input). Cancelling raises ``PromptCancelled``: the
        engine ends the run as interrupted (resumable) and releases the deployment."""
        value = self._ask(lambda: SecretModal(name, help), "")
        if not value:
            raise PromptCancelled(f"no value given for secret {name!r}")
        return value

    def choose(self, step_id: str, prompt: str, options: list[str]) -> str | None:
        """Pick one of ``options``; None refuses."""
        return self._ask(lambda: ChooseModal(step_id, prompt, options), None)
