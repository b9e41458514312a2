"""HTTP plumbing the chain and custody emulators share: a server that cuts keep-alive clients off when
stopped, a JSON handler, the control API's actions on a ``ChainControl``, and the 0600 credentials file.

Kept apart from ``emulators.evm`` so that the TRON emulator does not load eth-tester to serve HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from counterparties.chains.base import AssetRef

MAX_BODY = 1 << 20


class Server(ThreadingHTTPServer):
    """Remembers its open connections, so that stopping also cuts keep-alive clients off, as a node that
    went down would."""

    daemon_threads = True

    def __init__(self, *args, **kwargs) -> None:
        self.connections: set[socket.socket] = set()
        super().__init__(*args, **kwargs)

    def get_request(self):
        connection, address = super().get_request()
        self.connections.add(connection)
        return connection, address

    def shutdown_request(self, request):
        self.connections.discard(request)
        super().shutdown_request(request)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        pass  # a client that hung up is not news


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    verbose = False

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write(f"{self.server_version}: {fmt % args}\n")

    def _reply(self, status: int, value: Any) -> None:
        body = json.dumps(value).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def _body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(413, {"error": "request too large"})
            return None
        return self.rfile.read(length) if length else b""


def control_action(control, action: str, body: dict) -> Any:
    """One call of the control API on a ``ChainControl`` (the EVM and TRON emulators share its shape)."""
    def asset(symbol: str) -> AssetRef:
        for candidate in control.assets():
            if candidate.symbol == symbol:
                return candidate
        raise ValueError(f"no asset {symbol!r} on {control.chain}")

    def amount(value: Any) -> int:
        if isinstance(value, str) and value.isdigit():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"amount must be an integer of base units, not {value!r}")

    if action == "assets":
        return [{"symbol": a.symbol, "chain": a.chain, "decimals": a.decimals, "contract": a.contract}
                for a in control.assets()]
    if action == "new_address":
        return control.new_address()
    if action == "fund":
        return control.fund(body["address"], asset(body["asset"]), amount(body["amount"]))
    if action == "send":
        sent = control.send(body["from_address"], body["to_address"], asset(body["asset"]), amount(body["amount"]),
                            subtract_fee=bool(body.get("subtract_fee", False)))
        return {"txid": sent.txid, "amount": str(sent.amount), "fee": str(sent.fee)}
    if action == "mine":
        return control.mine(int(body.get("blocks", 1)))
    if action == "reorg":
        control.reorg(int(body["depth"]))
        return None
    raise LookupError(action)


def write_credentials(path: str | os.PathLike, values: dict) -> None:
    """Write the credentials file readable by its owner only (it holds the control token)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode otherwise
    with os.fdopen(fd, "w") as f:
        json.dump(values, f, indent=2)
