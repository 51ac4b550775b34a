"""One ASGI middleware in front of every route of the editor's server: Host, Origin, token, body size.

It wraps the whole app (JSON routes, static files, the mounted Gradio app with its queue, SSE and
WebSocket endpoints), outside Starlette's own error handling, so nothing reaches a route unchecked:

* **Host** must name a loopback address (`127.0.0.1`, `localhost`, `[::1]`, any port) or one
  configured with `allowed_hosts`: a DNS-rebinding page (Host `evil.example`) gets 403.
* **Origin**, when a request carries one, must be the server's own origin (same scheme, host and
  port as the Host header, the host allowed as above) or one configured with `allowed_origins`; a
  request a browser marks `Sec-Fetch-Site: cross-site`/`same-site` is refused too unless it is a
  top-level page navigation. A cross-site POST (form, `fetch` with `text/plain`) gets 403.
* **Token** (when configured; always when the server binds a non-loopback address): from the
  `Authorization: Bearer` header, the `X-Nodegraph-Token` header, the cookie set by the server, or
  a `?token=` query parameter. A page opened with `?token=` is redirected to the same URL without
  it and gets an HttpOnly, SameSite=Lax cookie, so the token leaves the address bar at once.
  Missing or wrong: 401. A request that presented it is marked in its scope (`holds_token`): the
  jobs API lets it act on every job.
* **Body size**: a declared Content-Length over the limit is refused before reading; otherwise the
  body is counted while it streams and the request is answered 413 as soon as the count passes the
  limit (a chunked upload without Content-Length is never read whole).
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
TOKEN_HEADER = "x-nodegraph-token"
TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]{16,512}")
TOKEN_SCOPE_KEY = "nodegraph.token"
"""Set to True in the ASGI scope of a request that presented the server's token (see `holds_token`)."""
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def new_token() -> str:
    return secrets.token_urlsafe(24)


def split_host(value: str) -> tuple[str, int | None] | None:
    """`host[:port]` (IPv6 in brackets) to (lower-case name, port); None when it is not one."""
    value = value.strip().lower()
    if not value or any(c in value for c in "/?#@ \\"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    elif value.count(":") == 1:
        name, port_text = value.split(":")
    elif ":" in value:
        return None  # a bare IPv6 address is not a valid Host header
    else:
        name, port_text = value, None
    if not name:
        return None
    if port_text is None:
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return name, int(port_text)


@dataclass(frozen=True)
class GuardConfig:
    """What the server accepts. The default: loopback Host names, same-origin requests, no token."""

    token: str | None = None
    allowed_hosts: frozenset[str] = frozenset()
    """Extra Host names (no port; `[v6]` or bare v6 both work), e.g. the machine's LAN name."""
    allowed_origins: frozenset[str] = frozenset()
    """Extra Origins, exactly as browsers send them (`https://host:port`)."""
    api_body_limit: int = 2 * 1024 * 1024
    """Largest body of a `/api/...` request."""
    body_limit: int = 4 * 1024 * 1024 + 64 * 1024
    """Largest body of any other request (the Gradio endpoint wraps a workflow in JSON, uploads in multipart)."""
    hosts: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.token is not None and not TOKEN_CHARS.fullmatch(self.token):
            raise ValueError("a token must be 16 or more characters from A-Z a-z 0-9 . _ ~ -")
        names = {h.strip().lower().strip("[]") for h in self.allowed_hosts if h.strip()}
        object.__setattr__(self, "hosts", frozenset(LOOPBACK_NAMES | names))
        object.__setattr__(self, "allowed_origins", frozenset(o.strip().lower().rstrip("/")
                                                              for o in self.allowed_origins if o.strip()))

    def limit_for(self, path: str) -> int:
        return self.api_body_limit if path.startswith("/api/") or path == "/api" else self.body_limit


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class BodyTooLarge(Exception):
    pass


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in headers and name != "cookie":
            # a repeated Host/Origin is ambiguous: remember it so the check refuses it
            headers[name] = headers[name] + "\x00" + value
        else:
            headers[name] = value if name not in headers else headers[name] + "; " + value
    return headers


class Guard:
    """The middleware. `Guard(app, config)`; `install_guard(fastapi_app, config)` puts it outermost."""

    def __init__(self, app: ASGIApp, config: GuardConfig) -> None:
        self.app, self.config = app, config

    # -- checks ---------------------------------------------------------------------------------
    def check_host(self, headers: dict[str, str]) -> tuple[str, int | None]:
        raw = headers.get("host")
        parsed = split_host(raw) if raw is not None and "\x00" not in raw else None
        if parsed is None:
            raise Refused(403, "missing or malformed Host header")
        if parsed[0] not in self.config.hosts:
            raise Refused(403, f"Host {parsed[0]!r} is not allowed (loopback names only unless configured "
                               "with --allowed-host)")
        return parsed

    def check_origin(self, scope: Scope, headers: dict[str, str], host: tuple[str, int | None]) -> None:
        origin = headers.get("origin")
        site = headers.get("sec-fetch-site", "").lower()
        if origin is not None:
            if "\x00" in origin:
                raise Refused(403, "more than one Origin header")
            normal = origin.strip().lower().rstrip("/")
            if normal in self.config.allowed_origins:
                return
            parts = urlsplit(normal) if normal != "null" else None
            if parts is None or parts.scheme not in ("http", "https") or parts.path or parts.query:
                raise Refused(403, f"cross-origin request refused (Origin {origin!r})")
            origin_host = split_host(parts.netloc)
            scheme = scope.get("scheme", "http")
            scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
            default = DEFAULT_PORTS.get(scheme)
            same = (origin_host is not None and parts.scheme == scheme
                    and origin_host[0] == host[0] and origin_host[0] in self.config.hosts
                    and (origin_host[1] or DEFAULT_PORTS[parts.scheme]) == (host[1] or default))
            if not same:
                raise Refused(403, f"cross-origin request refused (Origin {origin!r})")
            return
        if site in ("cross-site", "same-site"):
            navigation = (scope["type"] == "http" and scope.get("method") in ("GET", "HEAD")
                          and headers.get("sec-fetch-mode", "").lower() == "navigate")
            if not navigation:
                raise Refused(403, "cross-site request refused")

    def cookie_name(self, scope: Scope) -> str:
        server = scope.get("server")
        port = server[1] if server and len(server) > 1 and server[1] else 0
        return f"nodegraph_token_{port}"

    def presented_tokens(self, scope: Scope, headers: dict[str, str]) -> tuple[list[str], str | None]:
        """Tokens the request carries (headers, cookie), and the one in its query string, if any."""
        found: list[str] = []
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            found.append(auth[7:].strip())
        if TOKEN_HEADER in headers:
            found.append(headers[TOKEN_HEADER].split("\x00")[0].strip())
        if "cookie" in headers:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(headers["cookie"])
            except Exception:  # noqa: BLE001 - a malformed cookie header is just no token
                jar = SimpleCookie()
            morsel = jar.get(self.cookie_name(scope))
            if morsel is not None:
                found.append(morsel.value)
        query = [v for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
                 if k == "token"]
        return found, (query[0] if query else None)

    def token_ok(self, candidate: str | None) -> bool:
        token = self.config.token
        return bool(token) and candidate is not None and hmac.compare_digest(
            candidate.encode("utf-8", "surrogateescape"), token.encode("utf-8"))

    # -- ASGI -----------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        try:
            host = self.check_host(headers)
            self.check_origin(scope, headers, host)
            query_token: str | None = None
            if self.config.token:
                carried, query_token = self.presented_tokens(scope, headers)
                if not any(self.token_ok(t) for t in carried) and not self.token_ok(query_token):
                    raise Refused(401, "a token is required: open the URL printed at start (it carries "
                                       "?token=...), or send 'Authorization: Bearer <token>'")
                scope[TOKEN_SCOPE_KEY] = True
        except Refused as refused:
            await self.refuse(scope, receive, send, refused.status, refused.message)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        if (query_token is not None and self.token_ok(query_token) and scope.get("method") in ("GET", "HEAD")
                and "text/html" in headers.get("accept", "")):
            await self.set_cookie_and_redirect(scope, send)
            return
        await self.limited(scope, receive, send, headers)

    async def limited(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        limit = self.config.limit_for(scope.get("path", ""))
        declared = headers.get("content-length")
        if declared is not None:
            if "\x00" in declared or not declared.strip().isdigit():
                await self.respond(send, 400, "malformed Content-Length")
                return
            if int(declared) > limit:
                await self.respond(send, 413, f"request body is larger than {limit} bytes")
                return
        received = 0
        state = {"started": False, "refused": False}

        async def counting_receive() -> Message:
            nonlocal received
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    state["refused"] = True
                    if not state["started"]:
                        state["started"] = True
                        await self.respond(send, 413, f"request body is larger than {limit} bytes")
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            if state["refused"]:
                return  # the 413 went out already; the app's own answer is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not state["refused"]:
                raise

    async def refuse(self, scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        if scope["type"] == "websocket":
            # closing before accept makes the server answer the handshake with 403
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        await self.respond(send, status, message, extra)

    async def respond(self, send: Send, status: int, message: str,
                      extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = json.dumps({"detail": message}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"), (b"connection", b"close"), *(extra or [])]})
        await send({"type": "http.response.body", "body": body})

    async def set_cookie_and_redirect(self, scope: Scope, send: Send) -> None:
        """`/page?token=T&x=1` -> 303 to `/page?x=1` with the token in an HttpOnly cookie."""
        rest = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
                if k != "token"]
        path = scope.get("root_path", "") + scope.get("path", "/")
        location = path + ("?" + urlencode(rest) if rest else "")
        cookie = (f"{self.cookie_name(scope)}={self.config.token}; Path=/; HttpOnly; SameSite=Lax")
        await send({"type": "http.response.start", "status": 303, "headers": [
            (b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode("latin-1")),
            (b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def holds_token(scope: Scope) -> bool:
    """Whether the request presented the server's token: the operator's credential, which may act on
    every job (without a configured token nobody holds one, and each client acts on its own jobs only)."""
    return scope.get(TOKEN_SCOPE_KEY) is True


def install_guard(app: Any, config: GuardConfig) -> None:
    """Put a `Guard` outside a Starlette/FastAPI app's whole middleware stack (error handler included)."""
    build = app.build_middleware_stack

    def guarded_stack() -> ASGIApp:
        return Guard(build(), config)

    app.build_middleware_stack = guarded_stack
    app.middleware_stack = None
    app.state.nodegraph_guard = config
