"""The state diagram's layout of the shipped machine, and the demo giving up on a saga that does not move."""

from __future__ import annotations

import io
from itertools import combinations
from typing import Any

import httpx
import pytest

from pgm.devstack.demo import DemoFailure, SagaWatcher
from pgm.devstack.flow_manager import packaged_config
from pgm.devstack.inspector.diagram import assign_layers, layout
from tests.support.servers import StartFlowManager


def test_states_are_in_columns_by_distance_from_the_initial_state() -> None:
    machine = packaged_config()["machineDefinition"]
    layers = assign_layers(machine)
    assert layers["PAYMENT_CREATED"] == 0
    assert layers["PAYMENT_SCHEDULE_REQUESTED"] == 1
    assert set(layers) == {state["id"] for state in machine["states"]}
    # Paid comes after the request; refunds come after paid.
    assert layers["PAYMENT_SCHEDULE_REQUESTED"] < layers["PAYMENT_EXECUTED"] < layers["REFUND_REQUESTED"]
    assert layers["REFUND_REQUESTED"] < layers["PARTIALLY_REFUNDED"] < layers["SUBSEQUENT_REFUND_REQUESTED"]


def test_boxes_do_not_overlap_and_the_path_taken_is_marked() -> None:
    machine = packaged_config()["machineDefinition"]
    moves = [
        ("PAYMENT_CREATED", "scheduleRequested", "PAYMENT_SCHEDULE_REQUESTED"),
        ("PAYMENT_SCHEDULE_REQUESTED", "paymentScheduled", "PAYMENT_PENDING"),
    ]
    diagram = layout(machine, current="PAYMENT_PENDING", history=moves)
    for one, other in combinations(diagram.states, 2):
        apart = (
            one.x + one.width <= other.x
            or other.x + other.width <= one.x
            or one.y + one.height <= other.y
            or other.y + other.height <= one.y
        )
        assert apart, (one.id, other.id)
    assert all(box.x >= 0 and box.x + box.width <= diagram.width for box in diagram.states)
    assert all(box.y >= 0 and box.y + box.height <= diagram.height for box in diagram.states)
    assert [box.id for box in diagram.states if box.current] == ["PAYMENT_PENDING"]
    assert {box.id for box in diagram.states if box.visited} == {
        "PAYMENT_CREATED",
        "PAYMENT_SCHEDULE_REQUESTED",
        "PAYMENT_PENDING",
    }
    assert [(a.source, a.event, a.target) for a in diagram.arrows if a.taken] == moves
    transitions = sum(len(state.get("outgoingTransitions", [])) for state in machine["states"])
    assert len(diagram.arrows) == transitions
    assert {arrow.kind for arrow in diagram.arrows} <= {"forward", "back", "sibling", "loop"}
    assert all(len(box.info) <= (box.width - 20) / 5.8 for box in diagram.states)


def test_the_demo_gives_up_on_a_saga_that_does_not_move(
    start_flow_manager: StartFlowManager, minimal_config: dict[str, Any], receiver: Any
) -> None:
    _, receiver_url = receiver
    minimal_config["communicationProtocols"][0]["configurations"].update(
        endpoint="127.0.0.1", port=int(receiver_url.rsplit(":", 1)[1])
    )
    base_url = start_flow_manager(minimal_config)
    saga_id = httpx.post(f"{base_url}/saga", json={"associatedEntityId": "x", "metadata": {}}).json()["sagaId"]
    out = io.StringIO()
    with httpx.Client(base_url=base_url) as client, pytest.raises(DemoFailure, match="still in START after 0s"):
        SagaWatcher(client, saga_id, out).wait_for("END", timeout=0.3)
    assert "-> START" in out.getvalue()


def test_edge_labels_never_pile_up_on_each_other_or_on_the_boxes() -> None:
    machine = packaged_config()["machineDefinition"]
    moves = [
        ("PAYMENT_CREATED", "scheduleRequested", "PAYMENT_SCHEDULE_REQUESTED"),
        ("PAYMENT_SCHEDULE_REQUESTED", "paymentFailed", "PAYMENT_FAILED"),
    ]
    diagram = layout(machine, current="PAYMENT_FAILED", history=moves)

    def label(arrow: Any) -> tuple[float, float, float, float]:
        return (
            arrow.label_x - arrow.label_width / 2,
            arrow.label_y - 10,
            arrow.label_x + arrow.label_width / 2,
            arrow.label_y + 4,
        )

    def overlap(one: tuple[float, ...], other: tuple[float, ...]) -> bool:
        return one[0] < other[2] and other[0] < one[2] and one[1] < other[3] and other[1] < one[3]

    shown = [arrow for arrow in diagram.arrows if arrow.show_label]
    boxes = [(b.x, b.y, b.x + b.width, b.y + b.height) for b in diagram.states]
    for one, other in combinations(shown, 2):
        assert not overlap(label(one), label(other)), (one.event, other.event)
    for arrow in shown:
        assert not any(overlap(label(arrow), box) for box in boxes), arrow.event
    # The moves this saga made are always labelled; an event into a state is labelled once at most.
    assert all(arrow.show_label for arrow in diagram.arrows if arrow.taken)
    labelled = [(arrow.target, arrow.event) for arrow in shown]
    assert len(labelled) == len(set(labelled))
    # Several states fail into PAYMENT_FAILED on the same event: drawn once, not once per arrow.
    into_failed = [a for a in diagram.arrows if a.target == "PAYMENT_FAILED" and a.event == "paymentFailedBySystem"]
    assert len(into_failed) > 1
    assert len([a for a in into_failed if a.show_label]) <= 1
    assert [box.classes for box in diagram.states if box.current] == ["state current visited final failed"]
