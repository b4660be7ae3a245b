"""The help screen: what each key does and how a run works."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# elematrix: keys

**Start screen**
| key | does |
|---|---|
| `n` | new deployment (name, runbook, AWS profile and region, then parameters) |
| `enter` | open the highlighted deployment, or resume its interrupted run |
| `d` | status of the highlighted deployment: its live state against its runs (read-only) |
| `u` | upgrade the highlighted deployment (the `upgrade` runbook) |
| `b` | restore a backup into the highlighted deployment (the `restore` runbook) |
| `a` | audit of the highlighted deployment's posture (read-only) |
| `D` | restore drill into a throwaway `NAME-drill`, torn down after; asks first |
| `ctrl+p` | command palette: every action of the screen |
| `q` | quit |

**Run screen**
| key | does |
|---|---|
| `r` | run the selected phase (or resume the interrupted run) |
| `s` | run only the selected step |
| `e` | re-run the phase of the failed step |
| `k` | skip the selected step, where the runbook allows it |
| `p` | pause after the current step (resumable) |
| `v` | the plan of the selected phase: rendered inputs, secrets masked; changes nothing |
| `P` | edit the deployment's parameters (empty secrets keep the stored ones) |
| `f` | filter the log to the selected step, again for all steps |
| `x` | export the Markdown report of the run |
| `q` | quit (asks first while a step runs; the state is saved either way) |

A phase is **locked** until every gate of the phase before it passed. A failed step or gate
shows its **diagnosis** and the suggested **fix** in the detail pane and the gate panel.
Steps marked *confirm* ask before changing anything (`y` goes ahead, `n` or `escape`
declines; the last line of a dialog says what `enter` answers); destructive ones need the
deployment name typed. A declined step is *declined*, not failed: `r` asks again.
Everything is recorded in the deployment's journal; `elematrix report RUN_ID` prints the
same report from the command line.
"""


class HelpScreen(ModalScreen[None]):
    """Keys and concepts; any of escape, q or ? closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background 60%; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 100; height: 90%;
                                  border: thick $primary; background: $surface; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close"),
    ]

    def __init__(self, session_notes: str = "") -> None:
        super().__init__()
        # The session's notices in full (banner.notices_markdown): the banner only counts them.
        self.session_notes = session_notes

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(self.session_notes + HELP if self.session_notes else HELP)

    def action_close(self) -> None:
        self.dismiss(None)
