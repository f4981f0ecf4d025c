"""The dev stack's pages in headless Chromium, on a desktop and a phone: a failed saga is red with its
reason in view, the state diagram fits its box without piled-up labels, the home pages link somewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import ARTIFACTS
from tests.support.dev_process import DevProcess, pgm_dev, sandbox_metadata

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1400, "height": 1000}
PHONE = {"width": 390, "height": 844}
RED = "rgb(207, 34, 46)"
# Every visible edge label's box, from the browser's own layout.
LABEL_BOXES = """() => [...document.querySelectorAll('#machine .labels g.label rect')].map(r => {
  const b = r.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom];
})"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with pgm_dev(tmp_path_factory.mktemp("dev")) as dev:
        failed = dev.create_saga(sandbox_metadata("KO", amount=1750))
        dev.send_event(failed, "scheduleRequested")
        paid = dev.create_saga(sandbox_metadata("OK"))
        dev.send_event(paid, "scheduleRequested")
        dev.wait_state(failed, "PAYMENT_FAILED")
        dev.wait_state(paid, "PAYMENT_EXECUTED")
        yield dev, failed, paid


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000
    return path


def overlapping(boxes: list[list[float]]) -> list[tuple[int, int]]:
    return [
        (i, j)
        for i, one in enumerate(boxes)
        for j, other in enumerate(boxes[i + 1 :], i + 1)
        if one[0] < other[2] - 0.5 and other[0] < one[2] - 0.5 and one[1] < other[3] - 0.5 and other[1] < one[3] - 0.5
    ]


def test_the_saga_list_shows_a_failed_saga_in_red_with_its_reason(browser: Any, stack: Any) -> None:
    dev, failed, paid = stack
    page = browser.new_page()
    page.set_viewport_size(DESKTOP)
    page.goto(f"{dev.inspector}/?refresh=0")
    row = page.locator(f'tr.saga[data-saga-id="{failed}"]')
    assert "failed" in (row.get_attribute("class") or "")
    assert "Card declined" in row.locator(".reason").inner_text()
    assert row.locator(".badge").evaluate("e => getComputedStyle(e).color") == RED
    assert "failed" not in (page.locator(f'tr.saga[data-saga-id="{paid}"]').get_attribute("class") or "")
    screenshot(page, "inspector-list-failed.png")
    page.close()


@pytest.mark.parametrize(("viewport", "name"), [(DESKTOP, "desktop"), (PHONE, "phone")])
def test_a_failed_saga_page_fits_its_screen(browser: Any, stack: Any, viewport: dict[str, int], name: str) -> None:
    dev, failed, _ = stack
    page = browser.new_page()
    page.set_viewport_size(viewport)
    page.goto(f"{dev.inspector}/sagas/{failed}?refresh=0")
    reason = page.locator("#failure-reason")
    assert "Card declined by the sandbox" in reason.inner_text()
    box = reason.bounding_box()
    assert box is not None
    assert box["y"] + box["height"] <= viewport["height"], "the failure reason is below the first screen"
    assert page.locator("#current-state").evaluate("e => getComputedStyle(e).color") == RED
    assert page.locator("#machine .state.current").get_attribute("class") == "state current visited final failed"
    # Zoom to fit: the whole machine inside its box, no scrolling, no page wider than the screen.
    fits = page.evaluate(
        """() => { const box = document.getElementById('diagram'); const svg = document.getElementById('machine');
                  return [svg.getBoundingClientRect().width, box.clientWidth, box.scrollWidth,
                          document.documentElement.scrollWidth]; }"""
    )
    svg_width, box_width, box_scroll_width, page_width = fits
    assert svg_width <= box_width + 1
    assert box_scroll_width <= box_width + 1
    assert page_width <= viewport["width"] + 1
    assert overlapping(page.evaluate(LABEL_BOXES)) == []
    screenshot(page, f"inspector-failed-{name}-fit.png")
    # Actual size: readable on a phone, scrolled to the current state.
    page.click("#diagram-zoom")
    natural = float(page.locator("#machine").get_attribute("data-width") or 0)
    assert page.locator("#machine").evaluate("e => e.getBoundingClientRect().width") == pytest.approx(natural, abs=1)
    current = page.locator("#machine .state.current rect").bounding_box()
    diagram = page.locator("#diagram").bounding_box()
    assert current is not None
    assert diagram is not None
    assert diagram["x"] - 1 <= current["x"] + current["width"] / 2 <= diagram["x"] + diagram["width"] + 1
    screenshot(page, f"inspector-failed-{name}-actual.png")
    page.close()


def test_the_home_pages_link_to_the_parts(browser: Any, stack: Any) -> None:
    dev: DevProcess = stack[0]
    page = browser.new_page()
    page.set_viewport_size(PHONE)
    page.goto(f"{dev.pgm}/")
    assert page.title() == "Payment Gateway Manager"
    page.click("#links a[href='/sandbox/']")
    page.wait_for_url(f"{dev.pgm}/sandbox/")
    assert page.locator("tr.sandbox-payment").count() >= 2
    screenshot(page, "pgm-sandbox-index.png")
    page.goto(f"{dev.flow_manager}/")
    page.click("#links a[href='/sagas']")
    page.wait_for_url(f"{dev.flow_manager}/sagas")
    assert "sagaId" in page.content()
    page.close()
