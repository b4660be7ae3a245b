"""Command palette provider: the same actions as the key bindings of the current screen."""

from __future__ import annotations

from functools import partial

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider


class ScreenActions(Provider):
    """Offers every described binding of the screen the palette was opened from."""

    def _actions(self) -> list[tuple[str, str, str]]:
        out: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for b in self.screen.BINDINGS:
            if not isinstance(b, Binding) or not b.description:
                continue
            if b.action in seen or b.action.startswith("app.focus"):
                continue
            seen.add(b.action)
            key = b.key_display or b.key.split(",")[0]
            out.append((b.description, b.action, key))
        return out

    async def _run(self, action: str) -> None:
        await self.app.run_action(action, self.screen)

    async def discover(self) -> Hits:
        for title, action, key in self._actions():
            yield DiscoveryHit(title, partial(self._run, action), help=f"key: {key}")

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, action, key in self._actions():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self._run, action),
                          help=f"key: {key}")
