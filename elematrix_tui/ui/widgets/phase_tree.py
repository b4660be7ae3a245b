"""Phases, their steps and gates as a tree, labels kept current from the run model."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from ...engine.text import clean_line
from .. import format as fmt
from ..model import PhaseView, RunModel, StepView

NodeData = tuple[str, str]  # ("phase" | "step", id)


def phase_label(pv: PhaseView) -> Text:
    t = Text()
    t.append(f"{fmt.icon(pv.state)} ", style=fmt.style(pv.state))
    t.append(clean_line(pv.label), style="bold")
    t.append(f"  {pv.state}", style=fmt.style(pv.state) or "dim")
    return t


def step_label(sv: StepView) -> Text:
    t = Text()
    t.append(f"{fmt.icon(sv.status)} ", style=fmt.style(sv.status))
    if sv.is_gate:
        t.append("gate ", style="italic magenta")
    elif sv.role == "cleanup":
        t.append("cleanup ", style="italic dim")
    t.append(clean_line(sv.label))
    extra = []
    if sv.duration is not None:
        extra.append(fmt.duration(sv.duration))
    if sv.attempt > 1:
        extra.append(f"×{sv.attempt}")
    if extra:
        t.append("  " + " ".join(extra), style="dim")
    return t


class PhaseTree(Tree[NodeData]):
    """The runbook's phases and steps with live status marks."""

    DEFAULT_CSS = """
    PhaseTree { border: round $primary-darken-2; height: 1fr; min-height: 5; }
    """

    def __init__(self, model: RunModel, *, id: str | None = None) -> None:
        super().__init__("phases", id=id)
        self.model = model
        self.show_root = False
        self.guide_depth = 2
        self.nodes_by_id: dict[str, TreeNode[NodeData]] = {}

    def on_mount(self) -> None:
        self.rebuild()

    def rebuild(self) -> None:
        self.clear()
        self.nodes_by_id = {}
        for pv in self.model.phases:
            pnode = self.root.add(phase_label(pv), data=("phase", pv.phase_id), expand=True)
            self.nodes_by_id[pv.phase_id] = pnode
            for sv in pv.all():
                self.nodes_by_id[sv.step_id] = pnode.add_leaf(step_label(sv),
                                                              data=("step", sv.step_id))

    def refresh_ids(self, ids: set[str]) -> None:
        """Relabel the nodes of these phase/step ids."""
        for i in ids:
            node = self.nodes_by_id.get(i)
            if node is None:
                if i in self.model.steps:
                    # A step the runbook did not list: rebuild to show it.
                    self.rebuild()
                    return
                continue
            if node.data is None:
                continue
            kind, key = node.data
            if kind == "phase":
                pv = self.model.phase(key)
                if pv is not None:
                    node.set_label(phase_label(pv))
            else:
                sv = self.model.steps.get(key)
                if sv is not None:
                    node.set_label(step_label(sv))

    def select_id(self, key: str) -> None:
        node = self.nodes_by_id.get(key)
        if node is not None:
            self.move_cursor(node)

    def selected(self) -> NodeData | None:
        node = self.cursor_node
        return node.data if node is not None else None
