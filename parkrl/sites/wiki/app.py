"""The wiki as an ASGI app: articles, BM25 search, JSON facts, a logo, a 404 page."""
from __future__ import annotations

import base64

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from parkrl.sites.wiki.pages import facts, index_html, not_found_html, page_html
from parkrl.sites.wiki.search import WikiSearch
from parkrl.sites.wiki.world import World, generate

# a 1x1 PNG: the site's one binary resource (for testing clients on non-HTML answers)
LOGO_PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
                            "AAAABJRU5ErkJggg==")
MAX_K = 50


def create_app(world: World | None = None, seed: int = 0, entities: int = 300) -> FastAPI:
    """The site of `world` (default: `generate(seed, entities)`).

    Routes: GET / (every article), /wiki/<slug> (an article; unknown: a 404 page), /go/<slug>
    (a 302 to /wiki/<slug>), /search?q=...&k=10 (JSON [{"title", "url", "snippet"}], best first),
    /data/<slug>.json (the article's facts), /logo.png, /healthz.
    """
    world = world or generate(seed, entities)
    index = WikiSearch(world)
    app = FastAPI(title="parkrl wiki", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.world, app.state.search = world, index

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        return index_html(world)

    @app.get("/wiki/{slug}")
    def article(slug: str) -> HTMLResponse:
        if slug not in world.entities:
            return HTMLResponse(not_found_html(slug), status_code=404)
        return HTMLResponse(page_html(world, slug))

    @app.get("/go/{slug}")
    def go(slug: str) -> Response:
        return RedirectResponse(f"/wiki/{slug}", status_code=302)

    @app.get("/search")
    def search(request: Request, q: str = "", k: int = 10) -> JSONResponse:
        base = str(request.base_url).rstrip("/")
        hits = index.search(q, max(0, min(k, MAX_K)))
        return JSONResponse([{**h, "url": base + h["url"]} for h in hits])

    @app.get("/data/{name}")
    def data(name: str) -> JSONResponse:
        slug = name.removesuffix(".json")
        if not name.endswith(".json") or slug not in world.entities:
            return JSONResponse({"detail": f"no data for {name!r}"}, status_code=404)
        e = world.entities[slug]
        return JSONResponse({"name": e.name, "kind": e.kind,
                             "facts": {label: text for label, text, _ in facts(world, e)}})

    @app.get("/logo.png")
    def logo() -> Response:
        return Response(LOGO_PNG, media_type="image/png")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "articles": len(world.entities), "seed": world.seed}

    return app
