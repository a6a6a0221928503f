"""A fault-injecting HTTP proxy in front of a real ``mlflow server`` (tests only, 127.0.0.1).

Every request is forwarded unchanged unless a rule matches it (method, a fragment of the path, a
fragment of the body); a rule then either answers 503 without forwarding, cuts the connection
before forwarding, or forwards and cuts the connection instead of answering (the server did the
work, the client never hears of it). ``down_after`` makes every later request fail too, as when
the server or the network goes away mid-operation.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

from tests.servers import free_port


@dataclass
class Rule:
    method: str
    path: str
    action: str  # "503" | "cut" (before forwarding) | "cut_after" (forward, then cut)
    body: str = ""
    times: int = 1  # how many matching requests it hits; 0 = every one
    down_after: bool = False  # after it fires, the proxy refuses everything until reset()
    hits: int = 0

    def matches(self, method: str, path: str, body: bytes) -> bool:
        live = self.times == 0 or self.hits < self.times
        return live and method == self.method and self.path in path and self.body.encode() in body


@dataclass
class FaultProxy:
    upstream: str
    port: int = field(default_factory=free_port)
    rules: list[Rule] = field(default_factory=list)
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, what happened)
    down: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.rules.clear()
        self.down = False

    def start(self) -> FaultProxy:
        proxy = self
        target = urlparse(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _cut(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                if proxy.down:
                    proxy.log.append((self.command, self.path, "down"))
                    return self._cut()
                rule = next((r for r in proxy.rules if r.matches(self.command, self.path, body)), None)
                if rule is not None:
                    rule.hits += 1
                    if rule.down_after:
                        proxy.down = True
                    proxy.log.append((self.command, self.path, rule.action))
                    if rule.action == "503":
                        data = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected 503"}'
                        self.send_response(503)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                    if rule.action == "cut":
                        return self._cut()
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                skip = ("host", "connection", "transfer-encoding", "content-length")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if rule is not None and rule.action == "cut_after":
                    return self._cut()
                proxy.log.append((self.command, self.path, str(resp.status)))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
