"""The saga machine as a layered state diagram: geometry for a server-rendered inline SVG."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

BOX_WIDTH = 236
BOX_HEIGHT = 44
COLUMN_GAP = 170
ROW_GAP = 40
MARGIN = 36
# Monospace text at the sizes the stylesheet uses: enough to size the boxes behind edge labels.
LABEL_CHAR_WIDTH = 6.1
LABEL_HEIGHT = 14
INFO_CHAR_WIDTH = 5.8


@dataclass(frozen=True)
class StateBox:
    """One state, placed: its box, what it shows and how it is highlighted."""

    id: str
    x: float
    y: float
    width: float
    height: float
    layer: int
    business_state: str
    command: str | None
    is_final: bool
    current: bool
    visited: bool

    @property
    def info(self) -> str:
        """The box's second line: business state, command sent on entry, finality; cut to fit the box."""
        parts = [
            self.business_state,
            *([f"sends {self.command}"] if self.command else []),
            *(["final"] if self.is_final else []),
        ]
        text = " · ".join(parts)
        fits = int((self.width - 20) / INFO_CHAR_WIDTH)
        return text if len(text) <= fits else text[: fits - 1] + "…"

    @property
    def classes(self) -> str:
        """CSS classes: `state`, plus `current`, `visited`, `final` as they apply."""
        flags = [("current", self.current), ("visited", self.visited), ("final", self.is_final)]
        return " ".join(["state", *(name for name, on in flags if on)])


@dataclass(frozen=True)
class Arrow:
    """One transition, drawn as an SVG path with its event label."""

    source: str
    target: str
    event: str
    path: str
    label_x: float
    label_y: float
    kind: str
    taken: bool

    @property
    def classes(self) -> str:
        """CSS classes: `transition`, its kind (forward, back, sibling, loop), and `taken`."""
        return " ".join(["transition", self.kind, *(["taken"] if self.taken else [])])

    @property
    def label_width(self) -> float:
        """Width of the label's backdrop."""
        return len(self.event) * LABEL_CHAR_WIDTH + 8


@dataclass(frozen=True)
class Diagram:
    """Everything the template needs to draw the machine."""

    width: float
    height: float
    states: list[StateBox]
    arrows: list[Arrow]


def _transitions(definition: dict[str, Any]) -> list[tuple[str, str, str]]:
    edges = []
    for state in definition.get("states", []):
        for transition in state.get("outgoingTransitions", []):
            edges.append((str(state["id"]), str(transition["targetState"]), str(transition["inputEvent"])))
    return edges


def assign_layers(definition: dict[str, Any]) -> dict[str, int]:
    """Each state's column: its distance from the initial state, pushed one further past a sibling feeding it."""
    order = [str(state["id"]) for state in definition.get("states", [])]
    initial = str(definition.get("initialState", order[0] if order else ""))
    edges = [(source, target) for source, target, _ in _transitions(definition) if source != target]
    successors: dict[str, list[str]] = {state: [] for state in order}
    for source, target in edges:
        successors.setdefault(source, []).append(target)
    layers: dict[str, int] = {initial: 0}
    queue = deque([initial])
    while queue:
        state = queue.popleft()
        for target in successors.get(state, []):
            if target not in layers:
                layers[target] = layers[state] + 1
                queue.append(target)
    unreachable = max(layers.values(), default=-1) + 1
    for state in order:
        layers.setdefault(state, unreachable)
    # Arrows between states of one column pile up on top of each other: move their targets one column
    # on. Bounded, because a cycle inside a column would push forever.
    for _ in range(len(order)):
        moved = False
        for source, target in edges:
            if target != initial and layers[source] == layers[target]:
                layers[target] += 1
                moved = True
        if not moved:
            break
    return layers


def _order_columns(order: list[str], layers: dict[str, int], edges: list[tuple[str, str]]) -> list[list[str]]:
    columns: list[list[str]] = [[] for _ in range(max(layers.values(), default=0) + 1)]
    for state in order:
        columns[layers[state]].append(state)
    neighbours: dict[str, set[str]] = {state: set() for state in order}
    for source, target in edges:
        neighbours.setdefault(source, set()).add(target)
        neighbours.setdefault(target, set()).add(source)
    # Barycentre ordering: each state sits near the states of earlier columns it is connected to,
    # which keeps arrows short and crossings few; ties keep the configuration's order.
    for _ in range(2):
        rank: dict[str, float] = {}
        for index, column in enumerate(columns):
            for position, state in enumerate(column):
                rank[state] = position
            if index == 0:
                continue
            earlier = {state for col in columns[:index] for state in col}
            keys: dict[str, tuple[float, int]] = {}
            for position, state in enumerate(column):
                linked = [rank[other] for other in neighbours.get(state, set()) if other in earlier]
                keys[state] = (sum(linked) / len(linked) if linked else float(position), position)
            column.sort(key=keys.__getitem__)
            for position, state in enumerate(column):
                rank[state] = position
    return columns


def _cubic(x1: float, y1: float, c1x: float, c1y: float, c2x: float, c2y: float, x2: float, y2: float) -> str:
    return f"M {x1:.1f} {y1:.1f} C {c1x:.1f} {c1y:.1f}, {c2x:.1f} {c2y:.1f}, {x2:.1f} {y2:.1f}"


def _midpoint(points: tuple[float, ...]) -> tuple[float, float]:
    # The point of a cubic Bézier at t = 0.5.
    x1, y1, c1x, c1y, c2x, c2y, x2, y2 = points
    return (x1 + 3 * c1x + 3 * c2x + x2) / 8, (y1 + 3 * c1y + 3 * c2y + y2) / 8


def layout(
    definition: dict[str, Any], *, current: str | None = None, history: list[tuple[str, str, str]] | None = None
) -> Diagram:
    """Place the machine's states in columns by distance from the initial state and route its transitions.

    `history` lists the moves a saga made as (from state, event, to state): those arrows and states are
    marked taken and visited, and `current` is highlighted.
    """
    states = {str(state["id"]): state for state in definition.get("states", [])}
    order = list(states)
    descriptions = {
        business.get("id"): business.get("description", "") for business in definition.get("businessStates", [])
    }
    transitions = _transitions(definition)
    layers = assign_layers(definition)
    columns = _order_columns(order, layers, [(s, t) for s, t, _ in transitions if s != t])
    moves = history or []
    visited = {state for move in moves for state in (move[0], move[2])} | ({current} if current else set())
    taken = {(source, event, target) for source, event, target in moves}

    tallest = max((len(column) for column in columns), default=0)
    column_height = tallest * BOX_HEIGHT + max(tallest - 1, 0) * ROW_GAP
    boxes: dict[str, StateBox] = {}
    for index, column in enumerate(columns):
        height = len(column) * BOX_HEIGHT + max(len(column) - 1, 0) * ROW_GAP
        top = MARGIN + (column_height - height) / 2
        for position, state_id in enumerate(column):
            state = states[state_id]
            command = state.get("outputCommand")
            business_id = state.get("businessStateId")
            boxes[state_id] = StateBox(
                id=state_id,
                x=MARGIN + index * (BOX_WIDTH + COLUMN_GAP),
                y=top + position * (BOX_HEIGHT + ROW_GAP),
                width=BOX_WIDTH,
                height=BOX_HEIGHT,
                layer=index,
                business_state=f"{business_id} {descriptions.get(business_id, '')}".strip(),
                command=str(command.get("label")) if isinstance(command, dict) else None,
                is_final=bool(state.get("isFinal")),
                current=state_id == current,
                visited=state_id in visited,
            )

    arrows = [
        _route(boxes[source], boxes[target], event, (source, event, target) in taken)
        for source, target, event in transitions
        if source in boxes and target in boxes
    ]
    width = MARGIN * 2 + len(columns) * BOX_WIDTH + max(len(columns) - 1, 0) * COLUMN_GAP
    return Diagram(width=width, height=MARGIN * 2 + column_height, states=list(boxes.values()), arrows=arrows)


def _route(source: StateBox, target: StateBox, event: str, taken: bool) -> Arrow:
    """The path of one transition: forward arrows leave right and enter left, the rest curve around."""
    mid_y = source.y + source.height / 2
    target_mid_y = target.y + target.height / 2
    if source.id == target.id:
        # A loop over the box's top right corner, labelled beside it.
        x1, x2, top = source.x + source.width - 56, source.x + source.width - 20, source.y
        path = _cubic(x1, top, x1 - 6, top - 26, x2 + 6, top - 26, x2, top)
        return Arrow(source.id, target.id, event, path, source.x + source.width - 38, top - 24, "loop", taken)
    if target.layer > source.layer:
        start = (source.x + source.width, mid_y - 6)
        end = (target.x, target_mid_y - 6)
        reach = (end[0] - start[0]) / 2
        points = (start[0], start[1], start[0] + reach, start[1], end[0] - reach, end[1], end[0], end[1])
        kind = "forward"
    elif target.layer < source.layer:
        # Back along the lower half of the boxes, bowed downwards to stay clear of the forward arrows.
        start = (source.x, mid_y + 8)
        end = (target.x + target.width, target_mid_y + 8)
        reach = (start[0] - end[0]) / 2
        points = (start[0], start[1], start[0] - reach, start[1] + 36, end[0] + reach, end[1] + 36, end[0], end[1])
        kind = "back"
    else:
        # Same column: out of the right side and back into it, bulging into the gap.
        start = (source.x + source.width, mid_y + 10)
        end = (target.x + target.width, target_mid_y + 10)
        bulge = 60 + abs(target.y - source.y) / 6
        points = (start[0], start[1], start[0] + bulge, start[1], end[0] + bulge, end[1], end[0], end[1])
        kind = "sibling"
    label_x, label_y = _midpoint(points)
    return Arrow(source.id, target.id, event, _cubic(*points), label_x, label_y, kind, taken)
