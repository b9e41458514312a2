"""A loopback HTTP proxy in front of each outside party that can hold one request until told to let it go.

It puts a worker *inside* a chosen call deterministically: the portal is configured with the proxies' URLs, a
rule says which request to hold (party, method, path, body), and once the proxy holds it the worker is blocked
in exactly that call — the moment to SIGKILL it. Released afterwards, the held request still reaches the
party, which acts on it while the answer goes nowhere: the hardest case for the successor, which must resume
under the same idempotency key rather than act a second time.

Every request that passed is kept (`seen`) with the party's status, so a test can count what the parties were
asked to do and how they answered.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from emulators.serving import Server

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


@dataclass(frozen=True)
class Request:
    party: str
    method: str
    path: str
    body: bytes
    status: int = 0  # the party's answer, once it gave one


class _Group:
    """The state every proxy of one test shares: the rule, the held request, what passed."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rule: Callable[[Request], bool] | None = None
        self.held: Request | None = None
        self.released = threading.Event()
        self.seen: list[Request] = []


class Proxies:
    """One proxy per outside party URL; `settings` are the portal's settings pointing at them."""

    def __init__(self, settings: dict[str, str], parties: dict[str, str]):
        """`settings` are the PORTAL_* values of the world; `parties` maps a setting holding a URL to the party
        name rules see (e.g. {"PORTAL_CUSTODY_URL": "custody"})."""
        self.group = _Group()
        self.servers = []
        self.settings = dict(settings)
        for name, party in parties.items():
            server = _serve(party, settings[name], self.group)
            self.servers.append(server)
            self.settings[name] = server.proxy_url

    def hold(self, rule: Callable[[Request], bool]) -> None:
        """Hold the next request for which `rule(request)` is true (one only; the rest pass)."""
        with self.group.lock:
            self.group.rule, self.group.held = rule, None
            self.group.released.clear()

    def held(self) -> Request | None:
        return self.group.held

    def release(self) -> Request | None:
        """Let the held request go on to its party (its answer goes to whoever still waits for it)."""
        with self.group.lock:
            held, self.group.rule = self.group.held, None
            self.group.released.set()
        return held

    def seen(self, party: str | None = None) -> list[Request]:
        with self.group.lock:
            return [r for r in self.group.seen if party is None or r.party == party]

    def stop(self) -> None:
        self.release()
        for server in self.servers:
            server.stop()


def _serve(party: str, upstream_url: str, group: _Group) -> Server:
    upstream = urlsplit(upstream_url)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _relay(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Request(party, self.command, self.path, body)
            with group.lock:
                hold = group.rule is not None and group.held is None and group.rule(request)
                if hold:
                    group.held = request
            if hold:
                group.released.wait(timeout=300)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
            try:
                connection.request(self.command, self.path, body=body or None, headers=headers)
                answer = connection.getresponse()
                payload = answer.read()
            except OSError:
                self.close_connection = True
                return
            finally:
                connection.close()
            with group.lock:
                group.seen.append(replace(request, status=answer.status))
            try:
                self.send_response(answer.status, answer.reason)
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client is gone (killed): the party acted, the answer is lost
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = _relay

    server = Server(("127.0.0.1", 0), Handler)
    server.proxy_url = urlunsplit(upstream._replace(netloc=f"127.0.0.1:{server.server_address[1]}"))
    threading.Thread(target=server.serve_forever, daemon=True, name=f"proxy-{party}").start()
    return server
