"""Who may talk to the app's server: this machine's browser holding the printed token, nobody else.

The server binds 127.0.0.1 only. Every request must carry the token -- in the address the server printed
(``?token=...``, which also sets a cookie, as Jupyter does), in that cookie, or in an ``Authorization: token ...``
header -- and a ``Host`` header naming the server itself (``127.0.0.1:PORT`` or ``localhost:PORT``): a page of
another site that points a DNS name at 127.0.0.1 (DNS rebinding) sends its own name and is refused. A request
that says where it comes from (``Origin``) must come from the same address. Refusals are 403 with one line.
"""

from __future__ import annotations

import secrets
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def new_token() -> str:
    return secrets.token_urlsafe(24)


class LocalOnly:
    """ASGI middleware: refuse a request with a foreign ``Host`` / ``Origin`` or without the token."""

    def __init__(self, app: ASGIApp, port: int, token: str):
        self.app = app
        self.token = token
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        self.origins = {f"http://{host}" for host in self.hosts}
        self.cookie = f"vidseg-app-{port}"  # cookies ignore ports: one name per server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        refusal = self._refusal(headers)
        given = self._query_token(scope)
        if refusal is None and not (self._valid(given) or self._valid(self._cookie_token(headers))
                                    or self._valid(self._header_token(headers))):
            refusal = "no valid token: open the address that `vidseg app` printed (it ends in ?token=...)"
        if refusal is not None:
            await JSONResponse({"error": refusal}, status_code=403)(scope, receive, send)
            return
        if not self._valid(given):
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode("latin-1"))]
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _refusal(self, headers: dict[str, str]) -> str | None:
        if headers.get("host") not in self.hosts:
            return f"unknown host {headers.get('host', '')!r}: use http://{min(self.hosts)}/"
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            return f"requests from {origin!r} are not allowed"
        return None

    def _valid(self, token: Any) -> bool:
        return isinstance(token, str) and secrets.compare_digest(token.encode(), self.token.encode())

    @staticmethod
    def _query_token(scope: Scope) -> str | None:
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        return values[0] if values else None

    def _cookie_token(self, headers: dict[str, str]) -> str | None:
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except CookieError:  # a malformed cookie header carries no token
            return None
        return cookies[self.cookie].value if self.cookie in cookies else None

    @staticmethod
    def _header_token(headers: dict[str, str]) -> str | None:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "token" else None
