"""A real Litecoin Core node in regtest mode, driven as a :class:`emulators.chains.ChainControl`.

:func:`start_litecoin_regtest` launches Debian's ``/usr/bin/litecoind`` on 127.0.0.1 with a random RPC port
and random credentials (only their salted hash, ``-rpcauth``, reaches the command line and the data
directory), waits until the RPC answers, creates a wallet and mines past coinbase maturity. The portal reads
it with :class:`counterparties.chains.bitcoin.BitcoinRpcChain` at ``url`` with ``auth``, like any node.

Every address the emulator hands out is in its one wallet, so it can sign for each; ``send`` spends only the
UTXOs of ``from_address`` and returns the change there, as a custody system holding that one key would.
``reorg`` replaces the last blocks by a longer branch in which each of their transactions is double-spent
back to its own inputs' addresses at no fee: the transactions can never confirm again (they are gone from the
mempool and the wallet sees them as conflicted) while every balance returns to what it was before them.

Run ``python -m emulators.litecoin --credentials-file F [--port P] [--datadir D] [--block-time S]
[--control-port C]`` for the demo: it prints the RPC URL, writes ``{url, user, password, control_url,
control_token}`` to F (mode 0600) and serves a small control API (:class:`ControlServer`) that
:class:`RemoteLitecoinRegtest` speaks, so another process can fund, send, mine and re-organise.
SIGTERM or Ctrl-C stops the node and removes F.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from counterparties.chains.base import AssetRef
from counterparties.chains.bitcoin import BitcoinRpc, output_address, to_base_units, to_coins
from counterparties.errors import CounterpartyError, ErrorCode, PermanentError, TransientError
from emulators.chains import SentTx

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
LITECOIND = "/usr/bin/litecoind"
LTC = AssetRef(symbol="LTC", chain="litecoin", decimals=8)
WALLET = "emulator"
MINER_LABEL = "miner"
COINBASE_MATURITY = 100
PARTY = "litecoin-regtest"
STARTUP_SECONDS = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _rpcauth(user: str, password: str) -> str:
    # The format of Bitcoin Core's share/rpcauth/rpcauth.py: user:salt$HMAC-SHA256(key=salt, msg=password).
    salt = secrets.token_hex(16)
    digest = hmac.new(salt.encode(), password.encode(), hashlib.sha256).hexdigest()
    return f"{user}:{salt}${digest}"


def _check_asset(asset: AssetRef) -> None:
    if asset != LTC:
        raise ValueError(f"this regtest chain carries only LTC, not {asset.symbol} on {asset.chain}")


def _check_amount(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError("amount must be a positive integer in litoshi")


@dataclass(eq=False)
class LitecoinRegtest:
    """Controller of one running ``litecoind -regtest`` (a :class:`emulators.chains.ChainControl`)."""

    process: subprocess.Popen
    datadir: Path
    port: int
    user: str
    password: str = field(repr=False)
    owns_datadir: bool = True
    chain: str = "litecoin"

    def __post_init__(self) -> None:
        self.url = f"http://{HOST}:{self.port}/"
        self.node = BitcoinRpc(self.url, auth=self.auth, party=PARTY, timeout=(3.05, 60.0))
        self.wallet = BitcoinRpc(f"{self.url}wallet/{WALLET}", auth=self.auth, party=PARTY, timeout=(3.05, 60.0))
        self.miner_address = ""
        # One operation at a time: background mining must not land inside a reorg or between a send's steps.
        self._lock = threading.RLock()
        self._miner_stop: threading.Event | None = None
        self._miner_thread: threading.Thread | None = None
        self._stopped = False

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    def __enter__(self) -> LitecoinRegtest:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # -- ChainControl --

    def assets(self) -> list[AssetRef]:
        return [LTC]

    def new_address(self) -> str:
        with self._lock:
            return self.wallet.call("getnewaddress", "", "bech32")

    def fund(self, address: str, asset: AssetRef, amount: int) -> str:
        _check_asset(asset)
        _check_amount(amount)
        with self._lock:
            self._ensure_miner_funds(amount)
            sent = self._send_from(self.miner_address, address, amount, subtract_fee=False)
            self.mine(1)
            return sent.txid

    def send(self, from_address: str, to_address: str, asset: AssetRef, amount: int, *,
             subtract_fee: bool = False) -> SentTx:
        _check_asset(asset)
        _check_amount(amount)
        with self._lock:
            return self._send_from(from_address, to_address, amount, subtract_fee=subtract_fee)

    def mine(self, blocks: int = 1) -> int:
        if blocks < 1:
            raise ValueError("mine at least one block")
        with self._lock:
            self.node.call("generatetoaddress", blocks, self.miner_address)
            return int(self.node.call("getblockcount"))

    def reorg(self, depth: int) -> None:
        """Replace the last `depth` blocks by `depth` + 1 new ones; their transactions are double-spent.

        Leaving them in the mempool would let the next block confirm them again, and Bitcoin Core has no
        call to drop a mempool transaction; a conflicting spend of the same inputs, mined at the top of the
        new branch, removes them for good. It pays each input back to its own address with no fee (fine in a
        block, though never relayed), so every address ends with the balance it had before them.
        """
        with self._lock:
            tip = int(self.node.call("getblockcount"))
            if not 1 <= depth <= tip - COINBASE_MATURITY:
                raise ValueError(f"reorg depth must be between 1 and {tip - COINBASE_MATURITY}")
            first = tip - depth + 1
            blocks = [self.node.call("getblock", self.node.call("getblockhash", h), 2) for h in range(first, tip + 1)]
            spends = [tx for block in blocks for tx in block["tx"] if "coinbase" not in tx["vin"][0]]
            created = {tx["txid"] for tx in spends}
            # Only outpoints from before the fork: a transaction spending another of these dies with its parent.
            outpoints = [(vin["txid"], vin["vout"]) for tx in spends for vin in tx["vin"] if vin["txid"] not in created]
            self.node.call("invalidateblock", blocks[0]["hash"])
            conflict = self._double_spend(outpoints) if outpoints else None
            # A fresh coinbase address: an empty block mined in the same second to the same address would be
            # the very block just invalidated (same hash), which the node refuses.
            branch = self.wallet.call("getnewaddress")
            for _ in range(depth):
                self.node.call("generateblock", branch, [])
            # Last, so that a coinbase the transactions spent is as mature here as where they were mined.
            self.node.call("generateblock", branch, [conflict] if conflict else [])

    def set_block_time(self, seconds: float | None) -> None:
        with self._lock:
            if self._miner_stop is not None:
                self._miner_stop.set()
            self._miner_stop = self._miner_thread = None
        if seconds is None:
            return
        if seconds <= 0:
            raise ValueError("the block time must be positive")
        stop = threading.Event()

        def produce() -> None:
            while not stop.wait(seconds):
                try:
                    self.mine(1)
                except CounterpartyError as exc:  # the node may be stopping; the next tick tells
                    log.warning("background mining failed: %s", exc)

        thread = threading.Thread(target=produce, name="litecoin-regtest-miner", daemon=True)
        with self._lock:
            self._miner_stop, self._miner_thread = stop, thread
        thread.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.set_block_time(None)
        if self.process.poll() is None:
            try:
                self.node.call("stop")
            except CounterpartyError as exc:
                log.warning("RPC stop failed (%s); terminating the node", exc)
                self.process.terminate()
            # The node's HTTP server waits for open keep-alive connections before it exits.
            self.node.close()
            self.wallet.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.owns_datadir:
            shutil.rmtree(self.datadir, ignore_errors=True)

    # -- internals --

    def _prepare_wallet(self) -> None:
        loaded = self.node.call("listwallets")
        if WALLET not in loaded:
            wallet_dir = self.datadir / "regtest" / "wallets" / WALLET
            self.node.call("loadwallet" if wallet_dir.exists() else "createwallet", WALLET)
        existing = self.wallet.call("getaddressesbylabel", MINER_LABEL) if self._has_label(MINER_LABEL) else {}
        self.miner_address = next(iter(existing), "") or self.wallet.call("getnewaddress", MINER_LABEL, "bech32")
        height = int(self.node.call("getblockcount"))
        if height <= COINBASE_MATURITY:
            self.node.call("generatetoaddress", COINBASE_MATURITY + 1 - height, self.miner_address)

    def _has_label(self, label: str) -> bool:
        return label in self.wallet.call("listlabels")

    def _unspent(self, address: str) -> list[dict]:
        # minconf 0: a custody system may spend its own unconfirmed change. Immature coinbase is not listed.
        return [u for u in self.wallet.call("listunspent", 0, 9999999, [address]) if u.get("spendable")]

    def _ensure_miner_funds(self, amount: int) -> None:
        # A regtest block pays 50 LTC, halving every 150 blocks: mine until the miner can pay, within reason.
        margin = 1_000_000  # 0.01 LTC for fees
        for _ in range(40):
            available = sum(to_base_units(u["amount"], party=PARTY) for u in self._unspent(self.miner_address))
            if available >= amount + margin:
                return
            self.node.call("generatetoaddress", 50, self.miner_address)
        raise PermanentError(f"the regtest miner cannot raise {to_coins(amount)} LTC", party=PARTY,
                             code=ErrorCode.INSUFFICIENT_BALANCE)

    def _send_from(self, from_address: str, to_address: str, amount: int, *, subtract_fee: bool) -> SentTx:
        utxos = self._unspent(from_address)
        if not utxos:
            raise PermanentError(f"{from_address} has no coins this wallet can spend", party=PARTY,
                                 code=ErrorCode.INSUFFICIENT_BALANCE)
        inputs = [{"txid": u["txid"], "vout": u["vout"]} for u in utxos]
        raw = self.wallet.call("createrawtransaction", inputs, [{to_address: to_coins(amount)}])
        funded = self.wallet.call("fundrawtransaction", raw, {
            "add_inputs": False,  # only from_address's coins: the fixed inputs above
            "changeAddress": from_address,
            "subtractFeeFromOutputs": [0] if subtract_fee else [],
        })
        decoded = self.node.call("decoderawtransaction", funded["hex"])
        chosen = {(vin["txid"], vin["vout"]) for vin in decoded["vin"]}
        if not chosen <= {(u["txid"], u["vout"]) for u in utxos}:
            raise PermanentError("the wallet added coins of another address", party=PARTY,
                                 code=ErrorCode.REJECTED)
        signed = self.wallet.call("signrawtransactionwithwallet", funded["hex"])
        if not signed.get("complete"):
            raise PermanentError(f"the wallet cannot sign for {from_address}", party=PARTY,
                                 code=ErrorCode.REJECTED)
        txid = self.node.call("sendrawtransaction", signed["hex"])
        payment = 1 if funded["changepos"] == 0 else 0
        arrived = to_base_units(decoded["vout"][payment]["value"], party=PARTY)
        return SentTx(txid=txid, amount=arrived, fee=to_base_units(funded["fee"], party=PARTY))

    def _double_spend(self, outpoints: list[tuple[str, int]]) -> str:
        paid: dict[str, int] = {}
        for txid, n in outpoints:
            output = self.node.call("gettxout", txid, n, False)
            if output is None:
                raise PermanentError(f"reorg: output {txid}:{n} is not unspent after invalidateblock",
                                     party=PARTY, code=ErrorCode.REJECTED)
            address = output_address(output)
            paid[address] = paid.get(address, 0) + to_base_units(output["value"], party=PARTY)
        raw = self.wallet.call("createrawtransaction", [{"txid": t, "vout": n} for t, n in outpoints],
                               {address: to_coins(units) for address, units in paid.items()})
        signed = self.wallet.call("signrawtransactionwithwallet", raw)
        if not signed.get("complete"):
            raise PermanentError("reorg: the wallet cannot sign the double spend", party=PARTY,
                                 code=ErrorCode.REJECTED)
        return signed["hex"]


def start_litecoin_regtest(datadir: str | os.PathLike | None = None, *, port: int = 0,
                           block_time: float | None = None, litecoind: str = LITECOIND) -> LitecoinRegtest:
    """Start ``litecoind -regtest`` and return its controller once the wallet can spend.

    `datadir` None: a temporary directory, removed by ``stop()``; a given one is kept (and reused: the wallet
    and chain are loaded again). `port` 0: a free port is picked (and another one if that one is taken by
    the time the node binds it).
    """
    owns = datadir is None
    path = Path(tempfile.mkdtemp(prefix="litecoin-regtest-")) if owns else Path(datadir)
    path.mkdir(parents=True, exist_ok=True)
    attempts = 3 if port == 0 else 1
    for attempt in range(attempts):
        node = _launch(path, port or _free_port(), litecoind, owns)
        try:
            _wait_ready(node)
            break
        except _NodeExited as exc:
            if attempt + 1 == attempts:
                if owns:
                    shutil.rmtree(path, ignore_errors=True)
                raise RuntimeError(f"litecoind did not start: {exc}") from None
    try:
        node._prepare_wallet()
    except BaseException:
        node.stop()
        raise
    if block_time:
        node.set_block_time(block_time)
    return node


class _NodeExited(Exception):
    pass


def _launch(datadir: Path, port: int, litecoind: str, owns: bool) -> LitecoinRegtest:
    user, password = f"emulator-{secrets.token_hex(4)}", secrets.token_urlsafe(32)
    args = [
        litecoind, "-regtest", "-txindex=1", "-server", f"-rpcbind={HOST}", f"-rpcallowip={HOST}",
        f"-rpcport={port}", f"-rpcauth={_rpcauth(user, password)}", "-fallbackfee=0.0001", "-listen=0",
        "-dnsseed=0", "-connect=0", f"-datadir={datadir}", "-printtoconsole=0", "-daemon=0",
        # MWEB (Litecoin's extension blocks) activates at block 432 in regtest and mining then fails
        # (bad-txns-vin-empty); the portal does not handle MWEB outputs: never activate it (-2).
        "-vbparams=mweb:-2:0",
    ]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return LitecoinRegtest(process=process, datadir=datadir, port=port, user=user, password=password,
                           owns_datadir=owns)


def _wait_ready(node: LitecoinRegtest) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if node.process.poll() is not None:
            stderr = node.process.stderr.read().decode(errors="replace").strip() if node.process.stderr else ""
            raise _NodeExited(stderr or f"exit status {node.process.returncode}")
        try:
            # Short: whatever else may hold the port must not keep us from noticing that our node exited.
            node.node.call("getblockcount", timeout=(1.0, 2.0))
            return
        except (TransientError, PermanentError) as exc:
            # Not listening yet, or still loading (-28); refused credentials mean another program holds the
            # port, and our node is about to exit for want of it (then another port is tried).
            if isinstance(exc, PermanentError) and exc.code != ErrorCode.AUTH_FAILED:
                node.stop()
                raise
            if time.monotonic() > deadline:
                node.stop()
                raise RuntimeError(f"litecoind did not answer on {node.url} within {STARTUP_SECONDS:.0f} s") from None
            time.sleep(0.1)


# -- the control API, for other processes --

class ControlServer:
    """JSON POST endpoints on 127.0.0.1 driving a :class:`LitecoinRegtest`, behind a bearer token.

    ``/new_address`` → ``{address}``; ``/fund {address, amount}`` → ``{txid}``; ``/send {from_address,
    to_address, amount, subtract_fee}`` → ``{txid, amount, fee}``; ``/mine {blocks}`` → ``{height}``;
    ``/reorg {depth}`` → ``{height}``; ``/block_time {seconds}`` → ``{}``. Amounts are integers in litoshi.
    Errors: 401 (token), 400 (bad request or a permanent node error), 503 (a transient one).
    """

    def __init__(self, chain: LitecoinRegtest, token: str, port: int = 0) -> None:
        self.chain, self.token = chain, token
        self.httpd = ThreadingHTTPServer((HOST, port), self._handler())
        self.url = f"http://{HOST}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="litecoin-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, action: str, body: dict) -> dict:
        chain = self.chain
        if action == "new_address":
            return {"address": chain.new_address()}
        if action == "fund":
            return {"txid": chain.fund(str(body["address"]), LTC, body["amount"])}
        if action == "send":
            sent = chain.send(str(body["from_address"]), str(body["to_address"]), LTC, body["amount"],
                              subtract_fee=bool(body.get("subtract_fee", False)))
            return {"txid": sent.txid, "amount": sent.amount, "fee": sent.fee}
        if action == "mine":
            return {"height": chain.mine(int(body.get("blocks", 1)))}
        if action == "reorg":
            chain.reorg(int(body["depth"]))
            return {"height": int(chain.node.call("getblockcount"))}
        if action == "block_time":
            chain.set_block_time(body.get("seconds"))
            return {}
        raise LookupError(action)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                expected = f"Bearer {server.token}".encode()
                given = self.headers.get("Authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    return self._answer(401, {"error": "bearer token required"})
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(length) or b"{}") if length <= 65536 else None
                    if not isinstance(body, dict):
                        raise ValueError("the body must be a JSON object (at most 64 KiB)")
                    return self._answer(200, server.handle(self.path.strip("/"), body))
                except LookupError as exc:
                    if isinstance(exc, KeyError):
                        return self._answer(400, {"error": f"missing field {exc.args[0]}"})
                    return self._answer(404, {"error": "unknown action"})
                except TransientError as exc:
                    return self._answer(503, {"error": str(exc), "code": str(exc.code)})
                except (CounterpartyError, ValueError, TypeError) as exc:
                    code = str(exc.code) if isinstance(exc, CounterpartyError) else "VALIDATION"
                    return self._answer(400, {"error": str(exc), "code": code})

            def _answer(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # keep test and demo output quiet
                pass

        return Handler


class RemoteLitecoinRegtest:
    """:class:`emulators.chains.ChainControl` over a running CLI's control API (another process's node)."""

    chain = "litecoin"

    def __init__(self, url: str, control_url: str, control_token: str, *, user: str = "", password: str = "") -> None:
        self.url, self.control_url = url, control_url.rstrip("/")
        self.user, self._password, self._token = user, password, control_token

    @classmethod
    def from_credentials_file(cls, path: str | os.PathLike) -> RemoteLitecoinRegtest:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["url"], data["control_url"], data["control_token"], user=data["user"],
                   password=data["password"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, control_url={self.control_url!r})"

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self._password)

    def _post(self, action: str, **body: Any) -> dict:
        try:
            response = requests.post(f"{self.control_url}/{action}", json=body, timeout=(3.05, 120),
                                     headers={"Authorization": f"Bearer {self._token}"})
        except requests.RequestException as exc:
            raise TransientError(f"{action}: cannot reach the regtest control API ({type(exc).__name__})",
                                 party=PARTY, code=ErrorCode.CONNECTION) from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        message = f"{action}: {answer.get('error') or f'HTTP {response.status_code}'}"
        if response.status_code == 503:
            raise TransientError(message, party=PARTY, code=ErrorCode.SERVER_ERROR)
        if response.status_code != 200:
            code = answer.get("code")
            raise PermanentError(message, party=PARTY, http_status=response.status_code,
                                 code=code if code in ErrorCode._value2member_map_ else ErrorCode.REJECTED)
        return answer

    def assets(self) -> list[AssetRef]:
        return [LTC]

    def new_address(self) -> str:
        return self._post("new_address")["address"]

    def fund(self, address: str, asset: AssetRef, amount: int) -> str:
        _check_asset(asset)
        return self._post("fund", address=address, amount=amount)["txid"]

    def send(self, from_address: str, to_address: str, asset: AssetRef, amount: int, *,
             subtract_fee: bool = False) -> SentTx:
        _check_asset(asset)
        answer = self._post("send", from_address=from_address, to_address=to_address, amount=amount,
                            subtract_fee=subtract_fee)
        return SentTx(txid=answer["txid"], amount=answer["amount"], fee=answer["fee"])

    def mine(self, blocks: int = 1) -> int:
        return self._post("mine", blocks=blocks)["height"]

    def reorg(self, depth: int) -> None:
        self._post("reorg", depth=depth)

    def set_block_time(self, seconds: float | None) -> None:
        self._post("block_time", seconds=seconds)

    def stop(self) -> None:
        """The node belongs to the CLI process: stop that (SIGTERM) to stop the node."""


def _write_secret_file(path: Path, payload: dict) -> None:
    # Created 0600 from the first byte, never readable by others even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)
        json.dump(payload, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Litecoin Core regtest node on 127.0.0.1, for the demo")
    parser.add_argument("--port", type=int, default=0, help="RPC port (0: a free one)")
    parser.add_argument("--datadir", help="kept between runs (default: a temporary one, removed at stop)")
    parser.add_argument("--block-time", type=float, default=None, help="mine a block every S seconds")
    parser.add_argument("--credentials-file", required=True, type=Path,
                        help="written (0600) with url, user, password, control_url, control_token")
    parser.add_argument("--control-port", type=int, default=0, help="port of the control API (0: a free one)")
    args = parser.parse_args(argv)

    stopping = threading.Event()
    # Set before the slow start, so that a SIGTERM during it still ends in a clean stop.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    node = start_litecoin_regtest(args.datadir, port=args.port, block_time=args.block_time)
    token = secrets.token_urlsafe(32)
    control = ControlServer(node, token, args.control_port)
    try:
        _write_secret_file(args.credentials_file, {
            "url": node.url, "user": node.user, "password": node.password,
            "control_url": control.url, "control_token": token,
        })
        print(f"Litecoin regtest RPC on {node.url}  control API on {control.url}", flush=True)
        print(f"Credentials in {args.credentials_file}", flush=True)
        stopping.wait()
    finally:
        control.stop()
        node.stop()
        args.credentials_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
