"""The playground: one static page (gateway/static/) at / and /playground, for trying models by hand.

The files are read once at start-up. The HTML is never cached without asking (`no-cache` with an
ETag); it names its script and style sheet with their content hash (`?v=`), and those are cached
for a year under that name. The Content-Security-Policy lets the page run only its own script and
talk only to this gateway: nothing is loaded from the network.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web

from .config import ServerConfig

STATIC = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_ASSET_LINK = re.compile(r'((?:src|href)="/playground/)([\w.\-]+)(")')


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str  # a hash of the content: the same file always has the same one


def _asset(path: Path, body: bytes | None = None) -> Asset:
    body = path.read_bytes() if body is None else body
    return Asset(body, CONTENT_TYPES[path.suffix], hashlib.sha256(body).hexdigest()[:20])


def load_assets(folder: Path = STATIC) -> tuple[Asset, dict[str, Asset]]:
    """The page, with each link to an asset carrying that asset's hash, and the assets by name."""
    assets = {p.name: _asset(p) for p in folder.iterdir() if p.suffix in (".js", ".css", ".svg")}

    def versioned(match: re.Match[str]) -> str:
        name = match.group(2)
        return f"{match.group(1)}{name}?v={assets[name].etag}{match.group(3)}"

    page = folder / "index.html"
    html = _ASSET_LINK.sub(versioned, page.read_text("utf-8")).encode()
    return _asset(page, html), assets


def _serve(request: web.Request, asset: Asset, cache_control: str) -> web.Response:
    etag = f'"{asset.etag}"'
    headers = {hdrs.ETAG: etag, hdrs.CACHE_CONTROL: cache_control, "Content-Security-Policy": CSP,
               "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
    if etag in request.headers.get(hdrs.IF_NONE_MATCH, ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers)


def setup_playground(app: web.Application, server: ServerConfig) -> None:
    """Routes for the page when `server.playground` is on (by default: when serving on loopback)."""
    if not server.playground_enabled:
        return
    page, assets = load_assets()

    async def index(request: web.Request) -> web.Response:
        return _serve(request, page, "no-cache")

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        hashed = request.query.get("v") == found.etag  # the name the page uses: it never changes content
        return _serve(request, found, "public, max-age=31536000, immutable" if hashed else "no-cache")

    app.router.add_get("/", index)
    app.router.add_get("/playground", index)
    app.router.add_get("/playground/{name}", asset)
