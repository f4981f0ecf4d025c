"""`GET /`: a small page of links, so that opening the PGM's address in a browser is not a 404."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from pgm import __version__
from pgm.http.dependencies import Parts

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Payment Gateway Manager</title>
<style>
  body {{ font-family: system-ui, sans-serif; color: #1f2328; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; }}
  h1 {{ font-size: 1.3rem; }} li {{ margin: .35rem 0; }} code {{ font-size: .9em; }}
  .muted {{ color: #656d76; }}
</style></head>
<body>
<h1>Payment Gateway Manager <span class="muted">{version}</span></h1>
<p>Providers: {providers}.</p>
<ul id="links">
{links}
</ul>
</body></html>
"""


def build_router() -> APIRouter:
    """GET / (not part of the API: left out of the OpenAPI document)."""
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home(request: Request, parts: Parts) -> HTMLResponse:
        settings = parts.settings
        links = [
            ("/documentation", "API documentation", "every /v3 and /saga operation, interactive"),
            ("/documentation/openapi.json", "OpenAPI document", ""),
            ("/-/healthz", "/-/healthz", "liveness"),
            ("/-/ready", "/-/ready", "readiness: store and migrations"),
            ("/-/metrics", "/-/metrics", "Prometheus metrics"),
        ]
        if "sandbox" in settings.enabled_providers:
            links.append(("/sandbox/", "Sandbox", "the sandbox provider's payments and hosted pages"))
        items = "\n".join(
            f'<li><a href="{escape(href)}">{escape(text)}</a>'
            + (f' <span class="muted">{escape(note)}</span>' if note else "")
            + "</li>"
            for href, text, note in links
        )
        return HTMLResponse(
            PAGE.format(version=escape(__version__), providers=escape(", ".join(parts.registry.names)), links=items)
        )

    return router
