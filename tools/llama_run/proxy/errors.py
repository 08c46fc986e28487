"""The proxy's own error answers, in the OpenAI error format llama-server also uses."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from .limits import Refusal


def error_json(status: int, message: str, kind: str) -> bytes:
    return json.dumps({"error": {"code": status, "message": message, "type": kind}}).encode("utf-8")


def error_response(status: int, message: str, kind: str, headers: Optional[Dict[str, str]] = None) -> Any:
    from aiohttp import web

    return web.Response(
        status=status, body=error_json(status, message, kind), content_type="application/json", headers=headers
    )


def rate_limited(refusal: Refusal) -> Any:
    """429 as OpenAI sends it (`code` rate_limit_exceeded, `type` requests or tokens), with Retry-After."""
    from aiohttp import web

    body = {"error": {"message": refusal.message, "type": refusal.kind, "param": None, "code": "rate_limit_exceeded"}}
    return web.Response(
        status=429,
        body=json.dumps(body).encode("utf-8"),
        content_type="application/json",
        headers={"Retry-After": str(refusal.retry_after)},
    )
