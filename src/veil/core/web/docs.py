"""`GET /v1/docs`: the OpenAPI document rendered by Swagger UI, for people.

Swagger UI's files come from the installed `swagger-ui-bundle` package and are served from
`/v1/docs/assets/`; the page loads nothing from another host, and its Content-Security-Policy says
so to the browser: scripts, styles, the documents it fetches and images from this origin only
(images also as `data:` URIs, which Swagger UI's stylesheet uses for icons). That is the only
relaxation of the API's `default-src 'none'`, and it applies to this page alone.

Swagger UI 4 renders OpenAPI 3.0 only: the page fetches `/v1/openapi.json` itself and labels it
3.0 before rendering it. What 3.1 adds to schemas is shown less precisely there; tools read the
document itself, which stays 3.1. The validator badge (a call to an outside host) is turned off.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from veil.core.problems import not_found

DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ASSETS_PATH = "/v1/docs/assets"
# The only files served, with their media types. The rest of the package (source maps, other
# bundles, its sample index page pointing at a public demo API) is left out.
_ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
_ASSET_CACHE = "public, max-age=3600"

# Loaded as a file rather than inline, so that `script-src 'self'` needs no 'unsafe-inline'.
INIT_SCRIPT = """\
"use strict";
window.addEventListener("load", function () {
  fetch("/v1/openapi.json", { credentials: "same-origin" })
    .then(function (response) { return response.json(); })
    .then(function (spec) {
      spec.openapi = "3.0.3";
      window.ui = SwaggerUIBundle({
        spec: spec,
        dom_id: "#swagger-ui",
        deepLinking: true,
        validatorUrl: null,
        presets: [SwaggerUIBundle.presets.apis],
        layout: "BaseLayout",
      });
    });
});
"""

PAGE = f"""\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Veil API</title>
<link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script src="{ASSETS_PATH}/init.js"></script>
</body>
</html>
"""


async def docs_page(_: Request) -> Response:
    return Response(PAGE, media_type="text/html", headers={"Content-Security-Policy": DOCS_CSP})


async def docs_asset(request: Request) -> Response:
    name = request.path_params["name"]
    headers = {"Cache-Control": _ASSET_CACHE}
    if name == "init.js":
        return Response(INIT_SCRIPT, media_type="text/javascript; charset=utf-8", headers=headers)
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise not_found()
    # Read in a worker thread and streamed, with ETag and Last-Modified.
    return FileResponse(swagger_ui_path / name, media_type=media_type, headers=headers)


DOCS_ASSET_ROUTES = [Route(ASSETS_PATH + "/{name}", docs_asset, methods=["GET"])]
