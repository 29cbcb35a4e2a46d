"""An aiohttp web app with two poolkit pools: MariaDB/MySQL, and keep-alive HTTP to an upstream.

Needs ``pip install "poolkit[mysql,http,aiohttp]"``, a MariaDB/MySQL server and an HTTP upstream
(for example ``examples/fastapi_app.py`` on port 8000)::

    MYSQL_DSN=mysql://root@127.0.0.1:3306/test UPSTREAM_URL=http://127.0.0.1:8000 \\
        python examples/aiohttp_app.py

then::

    curl '127.0.0.1:8080/add?a=1&b=2'     # a query on a pooled MariaDB connection
    curl 127.0.0.1:8080/upstream/now      # a GET over a pooled keep-alive connection
    curl 127.0.0.1:8080/pools             # health and stats of both pools

Pools are created and opened when the app starts (``cleanup_ctx``) and closed at shutdown;
exhaustion becomes ``503`` with ``Retry-After``. Sizing comes from ``MYSQL_POOL_*`` variables.
"""

from __future__ import annotations

import os

from aiohttp import web

from poolkit.aiohttp import acquire, get_pools, setup
from poolkit.http import create_pool as create_http_pool
from poolkit.mysql import create_pool as create_mysql_pool

DEFAULT_MYSQL_DSN = "mysql://root@127.0.0.1:3306/test"
DEFAULT_UPSTREAM = "http://127.0.0.1:8000"


def create_app(mysql_dsn: str | None = None, upstream_url: str | None = None) -> web.Application:
    """Build the app.

    Args:
        mysql_dsn: the MariaDB/MySQL DSN (default: ``$MYSQL_DSN``, else the local server).
        upstream_url: base URL of the upstream (default: ``$UPSTREAM_URL``, else port 8000).
    """
    dsn = mysql_dsn or os.environ.get("MYSQL_DSN") or DEFAULT_MYSQL_DSN
    upstream = upstream_url or os.environ.get("UPSTREAM_URL") or DEFAULT_UPSTREAM
    app = web.Application()
    setup(
        app,
        {
            # Called at startup, in the server's event loop.
            "db": lambda: create_mysql_pool(dsn, name="db", acquire_timeout=2.0),
            "upstream": lambda: create_http_pool(
                upstream, name="upstream", max_size=10, acquire_timeout=2.0
            ),
        },
        stats_path="/pools",
    )
    app.router.add_get("/add", add)
    app.router.add_get("/upstream/{path:.*}", proxy)
    return app


async def add(request: web.Request) -> web.Response:
    """``a + b``, computed by the database."""
    try:
        a, b = int(request.query["a"]), int(request.query["b"])
    except (KeyError, ValueError):
        raise web.HTTPBadRequest(text="a and b must be integers") from None
    async with acquire(request, "db") as conn, conn.cursor() as cur:
        await cur.execute("SELECT %s + %s", (a, b))
        (total,) = await cur.fetchone()
    return web.json_response({"sum": int(total)})


async def proxy(request: web.Request) -> web.Response:
    """Forward a GET to the upstream over a pooled keep-alive connection."""
    upstream = get_pools(request)["upstream"]
    response = await upstream.get("/" + request.match_info["path"])
    return web.Response(
        body=response.body,
        status=response.status,
        content_type=response.headers.get("Content-Type", "application/octet-stream").split(";")[0],
    )


def main() -> None:
    """Serve the app on 127.0.0.1:$PORT (default 8080)."""
    web.run_app(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))


if __name__ == "__main__":
    main()
