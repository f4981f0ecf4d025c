"""The saga machine as a layered state diagram: geometry for a server-rendered inline SVG."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Any

BOX_WIDTH = 212
# Bold monospace state names at the stylesheet's 11.5px: a box widens to its machine's longest name.
NAME_CHAR_WIDTH = 7.1
BOX_HEIGHT = 44
COLUMN_GAP = 150
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
        """CSS classes: `state`, plus `current`, `visited`, `final`, `failed` (a *_FAILED state) as they apply."""
        flags = [
            ("current", self.current),
            ("visited", self.visited),
            ("final", self.is_final),
            ("failed", self.id.endswith("FAILED")),
        ]
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
    # The label is drawn only where it overlaps no other label and no box; a hidden one stays in the
    # arrow's tooltip.
    show_label: bool = True
    points: tuple[float, ...] = ()

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


def _point(points: tuple[float, ...], t: float) -> tuple[float, float]:
    """The point of a cubic Bézier curve at parameter t (0 at the start, 1 at the end)."""
    x1, y1, c1x, c1y, c2x, c2y, x2, y2 = points
    a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
    return a * x1 + b * c1x + c * c2x + d * x2, a * y1 + b * c1y + c * c2y + d * y2


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

    box_width = max([BOX_WIDTH, *(len(state_id) * NAME_CHAR_WIDTH + 20 for state_id in order)])
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
                x=MARGIN + index * (box_width + COLUMN_GAP),
                y=top + position * (BOX_HEIGHT + ROW_GAP),
                width=box_width,
                height=BOX_HEIGHT,
                layer=index,
                business_state=f"{business_id} {descriptions.get(business_id, '')}".strip(),
                command=str(command.get("label")) if isinstance(command, dict) else None,
                is_final=bool(state.get("isFinal")),
                current=state_id == current,
                visited=state_id in visited,
            )

    arrows = _place_labels(
        [
            _route(boxes[source], boxes[target], event, (source, event, target) in taken)
            for source, target, event in transitions
            if source in boxes and target in boxes
        ],
        list(boxes.values()),
    )
    width = MARGIN * 2 + len(columns) * box_width + max(len(columns) - 1, 0) * COLUMN_GAP
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
    label_x, label_y = _point(points, 0.5)
    return Arrow(source.id, target.id, event, _cubic(*points), label_x, label_y, kind, taken, points=points)


# Where along its arrow a label may sit, best first: the middle, then further out on either side.
LABEL_POSITIONS = (0.5, 0.38, 0.62, 0.28, 0.72, 0.2, 0.8)

Rect = tuple[float, float, float, float]


def _label_rect(x: float, y: float, width: float) -> Rect:
    return (x - width / 2, y - LABEL_HEIGHT + 4, x + width / 2, y + 4)


def _overlaps(one: Rect, other: Rect) -> bool:
    return one[0] < other[2] and other[0] < one[2] and one[1] < other[3] and other[1] < one[3]


def _place_labels(arrows: list[Arrow], boxes: list[StateBox]) -> list[Arrow]:
    """Move each label along its arrow until it overlaps no other label and no state box; drop it when no
    place is free, and draw one label for several arrows of the same event into the same state.

    Without this, the arrows converging on a state (every `paymentFailedBySystem` into PAYMENT_FAILED)
    pile their labels into an unreadable block. The arrows this saga took are placed first."""
    taken_space: list[Rect] = [(b.x, b.y, b.x + b.width, b.y + b.height) for b in boxes]
    labelled: set[tuple[str, str]] = set()
    placed: dict[int, Arrow] = {}
    order = sorted(range(len(arrows)), key=lambda index: (not arrows[index].taken, arrows[index].kind == "loop"))
    for index in order:
        arrow = arrows[index]
        if (arrow.target, arrow.event) in labelled and not arrow.taken:
            placed[index] = replace(arrow, show_label=False)
            continue
        candidates = [(arrow.label_x, arrow.label_y)] if arrow.kind == "loop" or not arrow.points else []
        candidates += (
            [_point(arrow.points, t) for t in LABEL_POSITIONS] if arrow.points and arrow.kind != "loop" else []
        )
        spot = next(
            (
                (x, y)
                for x, y in candidates
                if not any(_overlaps(_label_rect(x, y, arrow.label_width), other) for other in taken_space)
            ),
            None,
        )
        if spot is None:
            placed[index] = replace(arrow, show_label=False)
            continue
        taken_space.append(_label_rect(*spot, arrow.label_width))
        labelled.add((arrow.target, arrow.event))
        placed[index] = replace(arrow, label_x=spot[0], label_y=spot[1])
    return [placed[index] for index in range(len(arrows))]
