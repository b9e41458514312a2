"""A custody service for tests and the demo: it holds the keys (through the chain emulators) and signs.

It speaks the protocol ``counterparties.custody`` documents. It "controls" the seizure addresses it was handed
(``seize()`` makes a funded one, as if the police handed over the seized wallet) and the vault addresses it
made. Transfers are idempotent on their reference. ``on_transfer`` lets the world around it react to a
broadcast (the exchange emulator watching its deposit addresses).

Faults for tests: ``fail_next("lost_response")`` signs and broadcasts, then drops the connection without an
answer; ``fail_next("500")`` refuses without doing anything.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable

from counterparties.chains.base import AssetRef
from emulators.chains import ChainControl
from emulators.serving import JsonHandler, Server


class CustodyEmulator:
    def __init__(self, chains: dict[str, ChainControl], *, token: str | None = None):
        self.chains = chains
        self.token = token or secrets.token_urlsafe(24)
        self.controlled: set[tuple[str, str]] = set()
        self.vaults: dict[tuple[str, str, str], str] = {}
        self.transfers: dict[str, dict] = {}
        self.on_transfer: Callable[[AssetRef, str, str, int, str], None] | None = None
        self.on_vault: Callable[[AssetRef, str], None] | None = None
        self._faults: list[str] = []
        self._lock = threading.RLock()
        self._server: Server | None = None
        self.url = ""

    # -- what tests and the demo do ------------------------------------------------------------------

    def asset(self, chain: str, symbol: str) -> AssetRef:
        return next(a for a in self.chains[chain].assets() if a.symbol == symbol)

    def seize(self, chain: str, symbol: str, amount: int) -> str:
        """A new address holding `amount` of the asset, whose key custody now holds."""
        control = self.chains[chain]
        address = control.new_address()
        control.fund(address, self.asset(chain, symbol), amount)
        with self._lock:
            self.controlled.add((chain, address))
        return address

    def fail_next(self, kind: str) -> None:
        if kind not in ("lost_response", "500"):
            raise ValueError(kind)
        with self._lock:
            self._faults.append(kind)

    def take_fault(self) -> str | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    # -- the protocol ------------------------------------------------------------------------------

    def vault_address(self, chain: str, symbol: str, contract: str) -> str:
        with self._lock:
            key = (chain, symbol, contract)
            if key not in self.vaults:
                self.vaults[key] = self.chains[chain].new_address()
                self.controlled.add((chain, self.vaults[key]))
                if self.on_vault:
                    self.on_vault(self.asset(chain, symbol), self.vaults[key])
            return self.vaults[key]

    def transfer(self, body: dict) -> tuple[int, dict]:
        reference = str(body.get("reference") or "")
        if not reference:
            return 400, {"error": "reference is required"}
        with self._lock:
            known = self.transfers.get(reference)
            if known is not None:
                same = all(str(known["request"].get(k)) == str(body.get(k)) for k in
                           ("chain", "asset", "from_address", "to_address", "amount"))
                return (200, known["answer"]) if same else (409, {"error": f"{reference} was used for another "
                                                                           "transfer"})
            chain, symbol = body.get("chain"), body.get("asset")
            if chain not in self.chains:
                return 400, {"error": f"no chain {chain}"}
            if (chain, body.get("from_address")) not in self.controlled:
                return 403, {"error": "custody does not hold the key of from_address"}
            try:
                amount = int(str(body.get("amount")))
                asset = self.asset(chain, symbol)
            except (ValueError, StopIteration):
                return 400, {"error": "bad amount or asset"}
            try:
                sent = self.chains[chain].send(body["from_address"], body["to_address"], asset, amount,
                                               subtract_fee=bool(body.get("subtract_fee")))
            except Exception as exc:  # the chain refused: insufficient funds, bad address
                return 422, {"error": f"the chain refused the transfer: {exc}"[:300]}
            answer = {"reference": reference, "txid": sent.txid, "amount": str(sent.amount), "fee": str(sent.fee),
                      "status": "broadcast"}
            self.transfers[reference] = {"request": dict(body), "answer": answer}
        if self.on_transfer:
            self.on_transfer(asset, body["from_address"], body["to_address"], sent.amount, sent.txid)
        return 200, answer

    # -- serving ---------------------------------------------------------------------------------------

    def start(self, port: int = 0) -> str:
        emulator = self

        class Handler(JsonHandler):
            server_version = "custody-emulator"

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {emulator.token}":
                    self._reply(401, {"error": "unauthorised"})
                    return False
                return True

            def do_GET(self):
                if not self._authorised():
                    return
                parts = self.path.strip("/").split("/")
                if len(parts) == 4 and parts[:2] == ["v1", "addresses"]:
                    return self._reply(200, {"controlled": (parts[2], parts[3]) in emulator.controlled})
                if len(parts) == 3 and parts[:2] == ["v1", "transfers"]:
                    known = emulator.transfers.get(parts[2])
                    return self._reply(200, known["answer"]) if known else self._reply(404, {"error": "unknown"})
                self._reply(404, {"error": "no such path"})

            def do_POST(self):
                if not self._authorised():
                    return
                raw = self._body()
                if raw is None:
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    return self._reply(400, {"error": "not JSON"})
                if self.path == "/v1/vault-address":
                    try:
                        address = emulator.vault_address(body["chain"], body["asset"], body.get("contract", ""))
                    except (KeyError, StopIteration):
                        return self._reply(400, {"error": "unknown chain or asset"})
                    return self._reply(200, {"address": address})
                if self.path == "/v1/transfers":
                    fault = emulator.take_fault()
                    if fault == "500":
                        return self._reply(500, {"error": "internal error"})
                    status, answer = emulator.transfer(body)
                    if fault == "lost_response":
                        self.close_connection = True
                        self.connection.close()
                        return
                    return self._reply(status, answer)
                self._reply(404, {"error": "no such path"})

        self._server = Server(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, name="custody-emulator", daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self._server:
            self._server.stop()
