"""Everything outside the portal, on loopback, in one process: chains, custody, exchanges and the bank.

``start_world()`` starts a Litecoin Core regtest node (the Bitcoin-family chain), an EVM node with an ERC-20
USDT, a TronGrid-shaped TRON service, the custody emulator (it holds the keys), the HashKey/OSL exchange
emulator and the bank emulator, and wires what in reality happens between them without the portal:

* a custody vault address is registered with the platforms as a verified sender (Travel Rule whitelisting);
* coins broadcast to a platform deposit address appear there as a pending deposit, credited once the chain
  has confirmed them (``deposit_confirmations``);
* a sale's net proceeds are settled by the platform into the agency's offshore account at the bank, with the
  client order id as EndToEndId.

``world.settings()`` is what the portal needs to reach them (the ``PORTAL_*`` names of portal/secrets.py);
``python -m emulators.world --secrets-file var/emulators.json`` runs it for `make run` and writes them into a
0600 file the portal reads through PORTAL_SECRETS_FILE. The portal talks to every one of them only through
its real adapters, over HTTP/JSON-RPC.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from counterparties.chains.base import AssetRef, TxState
from emulators.custody import CustodyEmulator

PLATFORMS = {"hashkey": "hashkey", "osl": "osl"}  # portal organisation code → emulator venue
VENUE_CHAIN = {"bitcoin": "BTC", "litecoin": "LTC", "ethereum": "ETH", "tron": "TRC20"}


@dataclass
class World:
    chains: dict
    custody: CustodyEmulator
    exchange_url: str
    exchange: object
    bank_url: str
    bank: object
    offshore_account: str
    treasury_account: str = ""
    deposit_confirmations: int = 1
    _settled: set = field(default_factory=set)
    _pending: dict = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what the portal is configured with ------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        values = {"PORTAL_CHAIN_NETWORK": "regtest", "PORTAL_CUSTODY_URL": self.custody.url,
                  "PORTAL_CUSTODY_TOKEN": self.custody.token, "PORTAL_BANK_URL": self.bank_url,
                  "PORTAL_BANK_TOKEN": self.bank.token or "", "PORTAL_TREASURY_ACCOUNT": self.treasury_account}
        for chain, control in self.chains.items():
            prefix = f"PORTAL_CHAIN_{chain.upper()}"
            values[f"{prefix}_URL"] = control.url
            for name in ("user", "password", "api_key"):
                if getattr(control, name, None):
                    values[f"{prefix}_{name.upper()}"] = getattr(control, name)
        for code, venue in PLATFORMS.items():
            creds = self.exchange.credentials[venue]
            prefix = f"PORTAL_PLATFORM_{code.upper()}"
            values.update({f"{prefix}_KIND": venue, f"{prefix}_URL": getattr(self.exchange, f"{venue}_url"),
                           f"{prefix}_API_KEY": creds.api_key, f"{prefix}_API_SECRET": creds.secret})
            if getattr(creds, "passphrase", None):
                values[f"{prefix}_PASSPHRASE"] = creds.passphrase
        return values

    def asset(self, chain: str, symbol: str) -> AssetRef:
        return self.custody.asset(chain, symbol)

    def seize(self, chain: str, symbol: str, amount: int) -> str:
        """A funded seizure address whose key custody holds (the police handed the wallet over)."""
        return self.custody.seize(chain, symbol, amount)

    def mine(self, blocks: int = 1) -> None:
        for control in self.chains.values():
            control.mine(blocks)

    def set_block_time(self, seconds: float | None) -> None:
        for control in self.chains.values():
            control.set_block_time(seconds)

    # -- the glue -----------------------------------------------------------------------------------------

    def _deposit_venue(self, asset: AssetRef, to_address: str) -> str | None:
        for venue in PLATFORMS.values():
            if self.exchange.state.deposit_address(venue, asset.symbol, VENUE_CHAIN[asset.chain]) == to_address:
                return venue
        return None

    def _on_vault(self, asset: AssetRef, address: str) -> None:
        for venue in PLATFORMS.values():
            self.exchange.whitelist_sender(venue, address)

    def _on_transfer(self, asset: AssetRef, from_address: str, to_address: str, amount: int, txid: str) -> None:
        venue = self._deposit_venue(asset, to_address)
        if venue is None:
            return
        coins = Decimal(amount).scaleb(-asset.decimals)
        self.exchange.add_deposit(venue, asset=asset.symbol, chain=VENUE_CHAIN[asset.chain], txid=txid,
                                  amount=coins, sender=from_address, status="pending")
        with self._lock:
            self._pending[txid] = (venue, asset, from_address)

    def _credit_confirmed_deposits(self) -> None:
        with self._lock:
            pending = dict(self._pending)
        for txid, (venue, asset, sender) in pending.items():
            control = self.chains[asset.chain]
            reader = _reader(asset.chain, control)
            status = reader.transaction(txid, asset)
            if status.state == TxState.CONFIRMED and status.confirmations >= self.deposit_confirmations:
                verified = sender in self.exchange.state.venues[venue].sender_whitelist
                self.exchange.set_deposit_status(venue, txid, "credited" if verified else "held",
                                                 "" if verified else "sender not whitelisted")
                with self._lock:
                    self._pending.pop(txid, None)

    def _settle_sales(self) -> None:
        for venue in PLATFORMS.values():
            for execution in self.exchange.executions(venue):
                key = (venue, execution.client_id)
                if key in self._settled or execution.side != "sell":
                    continue
                gross = sum((Decimal(str(f["gross"])) for f in execution.fills), Decimal(0))
                net = gross - execution.fee
                currency = "USD" if execution.quote_ccy in ("USD", "USDT") else execution.quote_ccy
                self.bank.credit(self.offshore_account, net, currency, end_to_end_id=execution.client_id,
                                 remittance=f"SETTLEMENT {execution.client_id}")
                self._settled.add(key)

    def _glue_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._credit_confirmed_deposits()
                self._settle_sales()
                self.bank.book_payments()  # the bank executes accepted payment orders at once
            except Exception as exc:  # one bad round of glue must not stop the world
                print(f"world glue: {type(exc).__name__}: {exc}", flush=True)

    def stop(self) -> None:
        self._stop.set()
        for stopper in (self.custody.stop, self.exchange.stop, self.bank.stop,
                        *[c.stop for c in self.chains.values()]):
            try:
                stopper()
            except Exception:
                pass


def _reader(chain: str, control):
    """The world reads its own chains through the same adapters the portal uses."""
    if chain in ("litecoin", "bitcoin"):
        from counterparties.chains.bitcoin import BitcoinRpcChain

        return BitcoinRpcChain(control.url, chain=chain, auth=(control.user, control.password))
    if chain == "ethereum":
        from counterparties.chains.evm import EvmChain

        return EvmChain(control.url, chain=chain)
    from counterparties.chains.tron import TronGridChain

    return TronGridChain(control.url, api_key=getattr(control, "api_key", None))


def start_world(*, workdir: str | os.PathLike | None = None, block_time: float | None = 0.5,
                offshore_account: str = "HK-012-345678-838", glue_interval: float = 0.2,
                special_accounts: tuple[str, ...] = ("110100000000000001", "110100000000000002", "110100000000009999"),
                treasury_account: str = "270100000000000001", fx_rate: str = "7.1234",
                exchange_port: int = 0, bank_port: int = 0, custody_port: int = 0,
                chains: tuple[str, ...] = ("litecoin", "ethereum", "tron")) -> World:
    from emulators.bank import start_bank_emulator
    from emulators.exchange import start_exchange_emulator

    workdir = Path(workdir or tempfile.mkdtemp(prefix="world-"))
    controls = {}
    if "litecoin" in chains:
        from emulators.litecoin import start_litecoin_regtest

        controls["litecoin"] = start_litecoin_regtest(workdir / "litecoin", block_time=block_time)
    if "ethereum" in chains:
        from emulators.evm import start_evm_node

        controls["ethereum"] = start_evm_node(block_time=block_time)
    if "tron" in chains:
        from emulators.tron import start_tron_emulator

        controls["tron"] = start_tron_emulator(block_time=block_time)
    custody = CustodyEmulator(controls)
    custody.start(custody_port)
    exchange_url, exchange = start_exchange_emulator(exchange_port)
    bank_url, bank = start_bank_emulator(bank_port, token=secrets.token_urlsafe(16))
    bank.open_account(offshore_account, "USD", "Agency offshore account")
    # The bureaus' special case-funds accounts (CNY: a USD payment into one is an FX settlement) and the
    # treasury's account (a payment into it is booked with a treasury receipt).
    for number in special_accounts:
        bank.open_account(number, "CNY", "Special case-funds account")
    bank.open_treasury_account(treasury_account)
    bank.set_fx_rate("USD", Decimal(fx_rate))
    world = World(chains=controls, custody=custody, exchange_url=exchange_url, exchange=exchange,
                  bank_url=bank_url, bank=bank, offshore_account=offshore_account,
                  treasury_account=treasury_account)
    custody.on_vault = world._on_vault
    custody.on_transfer = world._on_transfer
    threading.Thread(target=world._glue_loop, args=(glue_interval,), name="world-glue", daemon=True).start()
    return world


def main() -> None:
    parser = argparse.ArgumentParser(description="Run every outside party on loopback for the demo.")
    parser.add_argument("--secrets-file", required=True, help="where to write the PORTAL_* settings (0600 JSON)")
    parser.add_argument("--workdir", default="var/world")
    parser.add_argument("--block-time", type=float, default=2.0, help="seconds between blocks (demo pace)")
    parser.add_argument("--offshore-account", default="HK-012-345678-838")
    parser.add_argument("--control-port", type=int, default=0, help="serve POST /seize for demo seeding")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ["PORTAL_CHAIN_NETWORK"] = "regtest"
    import django

    django.setup()
    world = start_world(workdir=args.workdir, block_time=args.block_time, offshore_account=args.offshore_account)
    values = world.settings()
    control_token = secrets.token_urlsafe(16)
    values["PORTAL_WORLD_CONTROL_URL"] = _serve_control(world, args.control_port, control_token)
    values["PORTAL_WORLD_CONTROL_TOKEN"] = control_token
    path = Path(args.secrets_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(values, out, indent=2)
    print(f"world ready: custody {world.custody.url}, exchange {world.exchange_url}, bank {world.bank_url}",
          flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stopped.set())
    signal.signal(signal.SIGINT, lambda *a: stopped.set())
    while not stopped.wait(1):
        pass
    world.stop()


def _serve_control(world: World, port: int, token: str) -> str:
    """POST /seize {"chain", "asset", "amount"} → {"address"}: for the demo's seeding command only."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            if self.headers.get("Authorization") != f"Bearer {token}" or self.path != "/seize":
                self.send_response(404)
                self.end_headers()
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            address = world.seize(body["chain"], body["asset"], int(body["amount"]))
            data = json.dumps({"address": address}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


if __name__ == "__main__":
    main()
