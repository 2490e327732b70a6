"""The dashboard: static files served by the gateway, drawn in the browser from the JSON routes.

Rules:
1. The files are plain HTML, CSS and JavaScript in ``gateway/static/dashboard`` -- no build step,
   no third-party code (the charts are hand-drawn SVG, ~400 lines; see the README for why).
2. The files are open (no key): they hold no data. Everything the page shows comes from the
   reader-scoped JSON routes (``/series``, ``/budget``, ``/config``) fetched with the key the
   user gives the page, so the page can show nothing a release does not already publish.
   Erasure counts (``/erasures/summary``) are exact, not a release: admin-scoped, and the page
   shows that panel only when the key it was given may read them.
3. Only the files listed in ``FILES`` are served; a strict Content-Security-Policy allows the
   page's own script, styles and fetches and nothing else.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static" / "dashboard"
FILES = {
    "index.html": "text/html",
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def add_routes(app: web.Application) -> None:
    from gateway import auth  # registered as open routes (auth rule 2): the files hold no data

    auth.route(app, "GET", "/", to_dashboard, "open")
    auth.route(app, "GET", "/dashboard", to_dashboard, "open")
    auth.route(app, "GET", "/dashboard/{name:[^/]*}", static_file, "open")


async def to_dashboard(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/dashboard/"})


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"] or "index.html"
    content_type = FILES.get(name)
    if content_type is None:
        raise web.HTTPNotFound(text=f"no dashboard file {name!r}")
    body = (STATIC / name).read_bytes()
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=HEADERS)
