"""`/documentation` renders the API reference in a real browser, from assets the PGM serves itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import ARTIFACTS
from tests.support.pgm_process import PgmProcess

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def documented_pgm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgmProcess]:
    """A PGM with the saga API on too, so that every router is in the document."""
    directory: Path = tmp_path_factory.mktemp("documentation")
    process = PgmProcess(
        f"sqlite:///{directory / 'pgm.sqlite3'}",
        directory / "pgm.log",
        FLOW_MANAGER_URL="http://127.0.0.1:9",
        SAGA_CRUD_URL="http://127.0.0.1:9/fm-transactions/",
    )
    process.start()
    yield process
    process.stop()


def test_documentation_page_renders_every_operation_with_schemas_and_examples(
    browser: Any, documented_pgm: PgmProcess
) -> None:
    document = documented_pgm.get("/documentation/openapi.json").json()
    operations = sum(len(methods) for methods in document["paths"].values())
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(f"{documented_pgm.url}/documentation")
    page.wait_for_selector(".opblock", timeout=20_000)
    assert page.locator("text=Unable to render this definition").count() == 0
    assert page.locator(".opblock").count() == operations
    assert page.locator(".opblock-summary-path", has_text="/v3/{provider}/{paymentMethod}/pay").first.is_visible()
    # The schemas section lists the request bodies; an operation opened shows its example and its parameters.
    assert page.locator("section.models .json-schema-2020-12__title", has_text="PayBody").first.is_visible()
    pay = page.locator("#operations-v3-pay_v3__provider___paymentMethod__pay_post")
    pay.locator(".opblock-summary").click()
    pay.locator(".parameters-container").wait_for(timeout=10_000)
    assert pay.locator("tr[data-param-name='provider']").count() == 1
    assert "order-1001" in pay.locator(".body-param__example, .microlight").first.inner_text()
    # Nothing was fetched from anywhere but the PGM itself.
    assert requested
    assert all(url.startswith(documented_pgm.url) for url in requested), requested
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "api-documentation.png"), full_page=False)
    page.close()
