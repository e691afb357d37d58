"""The ASGI ceiling: a Starlette hello-world that does what every protocol request must do at
least (parse a JSON body, answer JSON) and nothing else."""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def hello(request: Request) -> Response:
    body = orjson.loads(await request.body())
    return Response(
        orjson.dumps({"hello": "world", "echo": len(body)}), media_type="application/json"
    )


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"UP"}', media_type="application/json")


app = Starlette(
    routes=[Route("/hello", hello, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
)
