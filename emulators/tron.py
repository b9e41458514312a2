"""A TronGrid-shaped service over a simulated TRON ledger, for tests and the demo.

Not a TRON node: an in-memory ledger of TRX (6 decimals) and one TRC-20 "USDT" (6 decimals), served on
127.0.0.1 in the REST shapes TronGrid publishes, so :class:`counterparties.chains.tron.TronGridChain` reads it
as it would read api.trongrid.io:

* ``GET /v1/accounts/{address}`` (``balance`` in sun, ``trc20`` as ``[{contract: "amount"}]``; ``data: []``
  for an account that never received anything);
* ``GET /v1/accounts/{address}/transactions`` and ``.../transactions/trc20`` (``only_to``, ``only_from``,
  ``min_timestamp``, ``max_timestamp``, ``contract_address``, ``limit``, ``fingerprint`` paging);
* ``POST /wallet/gettransactionbyid``, ``/wallet/gettransactioninfobyid``, ``/wallet/getnowblock``,
  ``/wallet/getblockbynum``, ``/wallet/getblockbyid`` and ``/walletsolidity/getnowblock`` (the solidified
  block, ``solidify_depth`` below the tip: TRON solidifies after 2/3 of the 27 super representatives, about 19
  blocks). Unknown ids answer ``{}``, as java-tron does.

Addresses are real base58check TRON addresses (``T…``) of secp256k1 keys the emulator makes with bip_utils;
transaction ids are SHA-256 of the raw data (real TRON hashes the protobuf; nobody here re-derives them), and
transactions are not signed: the ledger trusts its own ``send``. Fees are flat: :data:`TRX_TRANSFER_FEE` for a
TRX transfer (bandwidth burnt) and :data:`TRC20_TRANSFER_FEE` for a token transfer (energy burnt), charged even
when the token transfer reverts (``contractRet: REVERT``; a transfer above the token balance reverts).

With an API key configured, every request but ``/_control/`` needs ``TRON-PRO-API-KEY`` (401 otherwise). The
control API (``POST /_control/{new_address,fund,send,mine,reorg,assets}``, bearer token) drives the ledger
from another process: ``python -m emulators.tron --port P --credentials-file F`` writes
``{url, control_url, token, api_key, usdt_contract}`` to F (mode 0600).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from bip_utils import Base58Encoder, Secp256k1PrivateKey, TrxAddrDecoder, TrxAddrEncoder

from counterparties.chains.base import AssetRef
from emulators.chains import SentTx
from emulators.serving import JsonHandler, Server, control_action, write_credentials

HOST = "127.0.0.1"
CHAIN = "tron"
SOLIDIFY_DEPTH = 19
TRX_TRANSFER_FEE = 268_000  # sun: 268 bytes of bandwidth burnt at 1,000 sun each
TRC20_TRANSFER_FEE = 13_844_850  # sun: ~32,964 energy at 420 sun
FEE_ALLOWANCE = 100_000_000  # 100 TRX: what `fund` gives a token holder so it can pay for transfers
TREASURY_TRX = 10**18
BLOCK_INTERVAL_MS = 3_000
MAX_BODY = 1 << 20
TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
TRC20_TRANSFER_SELECTOR = "a9059cbb"


def _hex41(address: str) -> str:
    """The 21-byte hex form ("41…") of a base58 address."""
    return "41" + TrxAddrDecoder.DecodeAddr(address).hex()


def _base58(hex41: str) -> str:
    return Base58Encoder.CheckEncode(bytes.fromhex(hex41))


def is_tron_address(value: Any) -> bool:
    if not isinstance(value, str) or not value.startswith("T"):
        return False
    try:
        TrxAddrDecoder.DecodeAddr(value)
    except ValueError:
        return False
    return True


@dataclass
class Tx:
    txid: str
    owner: str  # base58
    to: str  # base58: the recipient of TRX, or of the tokens
    amount: int
    token: bool
    timestamp: int  # ms
    raw_data: dict
    fee: int = 0
    result: str = ""  # SUCCESS | REVERT, decided when mined


@dataclass
class Block:
    number: int
    block_id: str
    parent_id: str
    timestamp: int
    txs: list[Tx]
    # Balances after this block: (TRX by address, USDT by address); a re-org goes back to an older block's.
    trx: dict[str, int] = field(default_factory=dict)
    usdt: dict[str, int] = field(default_factory=dict)


class TronLedger:
    """The controller of the simulated TRON chain (implements ``ChainControl``)."""

    chain = CHAIN

    def __init__(self, *, api_key: str | None = None, solidify_depth: int = SOLIDIFY_DEPTH,
                 control_token: str | None = None) -> None:
        self.lock = threading.RLock()
        self.api_key = api_key
        self.control_token = control_token
        self.solidify_depth = solidify_depth
        self.url = ""
        self.control_url = ""
        self._keys: dict[str, Secp256k1PrivateKey] = {}
        self.treasury = self.new_address()
        self.usdt_address = TrxAddrEncoder.EncodeKey(
            Secp256k1PrivateKey.FromBytes(hashlib.sha256(b"emulated TRC-20 USDT").digest()).PublicKey())
        self.trx = AssetRef("TRX", CHAIN, 6)
        self.usdt = AssetRef("USDT", CHAIN, 6, contract=self.usdt_address)
        genesis = Block(0, self._block_id(0, "genesis"), "00" * 32, _now_ms(), [],
                        trx={self.treasury: TREASURY_TRX}, usdt={})
        self.blocks: list[Block] = [genesis]
        self.pending: list[Tx] = []
        self._server = None
        self._miner: threading.Thread | None = None
        self._miner_stop = threading.Event()

    # -- ChainControl ----------------------------------------------------------------------------------------

    def assets(self) -> list[AssetRef]:
        return [self.trx, self.usdt]

    def new_address(self) -> str:
        key = Secp256k1PrivateKey.FromBytes(secrets.token_bytes(32))
        address = TrxAddrEncoder.EncodeKey(key.PublicKey())
        with self.lock:
            self._keys[address] = key
        return address

    def fund(self, address: str, asset: AssetRef, amount: int) -> str:
        _check_address(address)
        _check_amount(amount)
        with self.lock:
            if self._is_token(asset):
                # The treasury is the token's issuer: it mints what it gives.
                self.blocks[-1].usdt[self.treasury] = self.blocks[-1].usdt.get(self.treasury, 0) + amount
                txid = self._broadcast(self.treasury, address, amount, token=True).txid
                if self.blocks[-1].trx.get(address, 0) < FEE_ALLOWANCE:
                    self._broadcast(self.treasury, address, FEE_ALLOWANCE, token=False)
            else:
                txid = self._broadcast(self.treasury, address, amount, token=False).txid
            self.mine()
            return txid

    def send(self, from_address: str, to_address: str, asset: AssetRef, amount: int, *,
             subtract_fee: bool = False) -> SentTx:
        if from_address not in self._keys:
            raise ValueError(f"the emulator holds no key for {from_address}")
        _check_address(to_address)
        _check_amount(amount)
        with self.lock:
            token = self._is_token(asset)
            value = amount - TRX_TRANSFER_FEE if subtract_fee and not token else amount
            if value <= 0:
                raise ValueError(f"amount {amount} does not cover the fee")
            tx = self._broadcast(from_address, to_address, value, token=token)
            will_revert = token and self._spendable(from_address, token=True) < 0
            return SentTx(txid=tx.txid, amount=0 if will_revert else value, fee=tx.fee)

    def mine(self, blocks: int = 1) -> int:
        if blocks < 1:
            raise ValueError("mine at least one block")
        with self.lock:
            for _ in range(blocks):
                self._mine_one(self.pending)
                self.pending = []
            return self.tip().number

    def reorg(self, depth: int) -> None:
        with self.lock:
            if depth < 1 or depth >= len(self.blocks):
                raise ValueError(f"cannot re-organise {depth} blocks below tip {self.tip().number}")
            del self.blocks[-depth:]
            self.pending = []  # the replaced blocks' transactions and the mempool are dropped, not re-broadcast
            for _ in range(depth + 1):
                self._mine_one([])

    def set_block_time(self, seconds: float | None) -> None:
        if seconds is not None and seconds <= 0:
            raise ValueError("block time must be positive")
        if self._miner is not None:
            self._miner_stop.set()
            self._miner.join()
            self._miner = None
        if seconds is not None:
            self._miner_stop = threading.Event()
            self._miner = threading.Thread(target=self._mine_every, args=(seconds, self._miner_stop),
                                           name="tron-miner", daemon=True)
            self._miner.start()

    def stop(self) -> None:
        self.set_block_time(None)
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> TronLedger:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the ledger ------------------------------------------------------------------------------------------

    def tip(self) -> Block:
        return self.blocks[-1]

    def solidified(self) -> Block:
        return self.blocks[max(0, len(self.blocks) - 1 - self.solidify_depth)]

    def _is_token(self, asset: AssetRef) -> bool:
        if asset.chain != CHAIN:
            raise ValueError(f"{asset.symbol} is on {asset.chain}, not {CHAIN}")
        if asset.contract:
            if asset.contract != self.usdt_address:
                raise ValueError(f"no token at {asset.contract} on this chain")
            return True
        if asset.symbol != "TRX":
            raise ValueError(f"{asset.symbol} is not this chain's native coin and has no contract")
        return False

    def _spendable(self, address: str, *, token: bool) -> int:
        """What `address` has left after its pending transactions (may be negative for tokens: a revert)."""
        tip = self.tip()
        balance = (tip.usdt if token else tip.trx).get(address, 0)
        for tx in self.pending:
            if tx.owner == address:
                balance -= (tx.amount if tx.token == token else 0) + (0 if token else tx.fee)
        return balance

    def _broadcast(self, owner: str, to: str, amount: int, *, token: bool) -> Tx:
        fee = TRC20_TRANSFER_FEE if token else TRX_TRANSFER_FEE
        if self._spendable(owner, token=False) < fee + (0 if token else amount):
            # java-tron refuses such a transaction at broadcast: it never reaches a block.
            raise ValueError(f"{owner} cannot pay {amount if not token else 0} sun plus a {fee} sun fee")
        now = _now_ms()
        if token:
            data = TRC20_TRANSFER_SELECTOR + "00" * 11 + _hex41(to) + f"{amount:064x}"
            contract = {"type": "TriggerSmartContract", "parameter": {
                "value": {"data": data, "owner_address": _hex41(owner), "contract_address": _hex41(self.usdt_address)},
                "type_url": "type.googleapis.com/protocol.TriggerSmartContract"}}
        else:
            contract = {"type": "TransferContract", "parameter": {
                "value": {"amount": amount, "owner_address": _hex41(owner), "to_address": _hex41(to)},
                "type_url": "type.googleapis.com/protocol.TransferContract"}}
        tip = self.tip()
        raw_data = {"contract": [contract], "ref_block_bytes": f"{tip.number & 0xFFFF:04x}",
                    "ref_block_hash": tip.block_id[16:32], "expiration": now + 60_000, "timestamp": now,
                    "nonce": secrets.token_hex(8)}  # our own field: two equal transfers in one ms stay distinct
        if token:
            raw_data["fee_limit"] = 100_000_000
        txid = hashlib.sha256(json.dumps(raw_data, sort_keys=True).encode()).hexdigest()
        tx = Tx(txid, owner, to, amount, token, now, raw_data, fee=fee)
        self.pending.append(tx)
        return tx

    def _mine_one(self, txs: list[Tx]) -> Block:
        parent = self.tip()
        trx, usdt = dict(parent.trx), dict(parent.usdt)
        mined = []
        for tx in txs:
            tx = copy.copy(tx)
            trx[tx.owner] = trx.get(tx.owner, 0) - tx.fee
            if tx.token:
                if usdt.get(tx.owner, 0) >= tx.amount:
                    usdt[tx.owner] -= tx.amount
                    usdt[tx.to] = usdt.get(tx.to, 0) + tx.amount
                    tx.result = "SUCCESS"
                else:
                    tx.result = "REVERT"
            else:
                trx[tx.owner] -= tx.amount
                trx[tx.to] = trx.get(tx.to, 0) + tx.amount
                tx.result = "SUCCESS"
            mined.append(tx)
        number = parent.number + 1
        block = Block(number, self._block_id(number, parent.block_id + secrets.token_hex(8)), parent.block_id,
                      max(_now_ms(), parent.timestamp + BLOCK_INTERVAL_MS), mined, trx, usdt)
        self.blocks.append(block)
        return block

    @staticmethod
    def _block_id(number: int, salt: str) -> str:
        # As on TRON: the first 8 bytes of a block id are its number.
        return f"{number:016x}" + hashlib.sha256(salt.encode()).hexdigest()[16:]

    def _mine_every(self, seconds: float, stop: threading.Event) -> None:
        while not stop.wait(seconds):
            self.mine()

    def find(self, txid: str) -> tuple[Tx, Block | None] | None:
        for block in reversed(self.blocks):
            for tx in block.txs:
                if tx.txid == txid:
                    return tx, block
        for tx in self.pending:
            if tx.txid == txid:
                return tx, None
        return None

    # -- TronGrid shapes -------------------------------------------------------------------------------------

    def block_json(self, block: Block) -> dict:
        return {
            "blockID": block.block_id,
            "block_header": {"raw_data": {"number": block.number, "txTrieRoot": "00" * 32,
                                          "witness_address": _hex41(self.treasury), "parentHash": block.parent_id,
                                          "version": 30, "timestamp": block.timestamp},
                             "witness_signature": ""},
            **({"transactions": [self.tx_json(tx) for tx in block.txs]} if block.txs else {}),
        }

    def tx_json(self, tx: Tx, block: Block | None = None) -> dict:
        answer = {"txID": tx.txid, "raw_data": tx.raw_data, "raw_data_hex": "", "signature": []}
        if tx.result:
            answer["ret"] = [{"contractRet": tx.result}]
        if block is not None:
            answer.update(blockNumber=block.number, block_timestamp=block.timestamp, net_fee=0 if tx.token else tx.fee,
                          energy_fee=tx.fee if tx.token else 0)
        return answer

    def tx_info_json(self, tx: Tx, block: Block) -> dict:
        info: dict[str, Any] = {"id": tx.txid, "blockNumber": block.number, "blockTimeStamp": block.timestamp,
                                "contractResult": [""]}
        if tx.fee:
            info["fee"] = tx.fee  # java-tron leaves "fee" out when it is zero
        if tx.token:
            info["contract_address"] = _hex41(self.usdt_address)
            info["receipt"] = {"energy_fee": tx.fee, "energy_usage_total": tx.fee // 420, "result": tx.result}
            if tx.result == "SUCCESS":
                info["log"] = [{"address": _hex41(self.usdt_address)[2:],
                                "topics": [TRANSFER_TOPIC, "00" * 12 + _hex41(tx.owner)[2:],
                                           "00" * 12 + _hex41(tx.to)[2:]],
                                "data": f"{tx.amount:064x}"}]
            else:
                info["result"] = "FAILED"
                info["resMessage"] = "transfer amount exceeds balance".encode().hex()
        else:
            info["receipt"] = {"net_fee": tx.fee}
        return info

    def account_json(self, address: str) -> list[dict]:
        tip = self.tip()
        if address not in tip.trx and address not in tip.usdt:
            return []
        trc20 = [{self.usdt_address: str(tip.usdt[address])}] if address in tip.usdt else []
        return [{"address": _hex41(address), "balance": tip.trx.get(address, 0), "trc20": trc20,
                 "create_time": self.blocks[0].timestamp}]

    def history(self, address: str, query: dict, *, token: bool) -> list[dict]:
        only_to, only_from = query.get("only_to") == "true", query.get("only_from") == "true"
        low, high = int(query.get("min_timestamp", 0)), int(query.get("max_timestamp", 1 << 62))
        contract = query.get("contract_address")
        items = []
        for block in reversed(self.blocks):  # newest first, as TronGrid orders them
            if not low <= block.timestamp <= high:
                continue
            for tx in reversed(block.txs):
                if tx.token != token or (only_to and tx.to != address) or (only_from and tx.owner != address):
                    continue
                if address not in (tx.to, tx.owner) or (token and (tx.result != "SUCCESS" or
                                                                  contract not in (None, self.usdt_address))):
                    continue
                if token:
                    items.append({"transaction_id": tx.txid, "token_info": {
                        "symbol": "USDT", "address": self.usdt_address, "decimals": 6, "name": "Tether USD"},
                        "block_timestamp": block.timestamp, "from": tx.owner, "to": tx.to, "type": "Transfer",
                        "value": str(tx.amount)})
                else:
                    items.append(self.tx_json(tx, block))
        return items


def _now_ms() -> int:
    return int(time.time() * 1000)


def _check_address(address: str) -> None:
    if not is_tron_address(address):
        raise ValueError(f"not a TRON address: {address!r}")


def _check_amount(amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise ValueError(f"amount must be a positive integer of base units, not {amount!r}")


# -- HTTP ----------------------------------------------------------------------------------------------------

class _Handler(JsonHandler):
    server_version = "TronGridEmulator/1"
    ledger: TronLedger

    def do_GET(self):
        self._handle("GET", b"")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._reply(413, {"Error": "request too large"})
        self._handle("POST", self.rfile.read(length) if length else b"")

    def _handle(self, method: str, body: bytes) -> None:
        url = urlsplit(self.path)
        ledger = self.ledger
        if url.path.startswith("/_control/"):
            return self._control(url.path.removeprefix("/_control/"), body)
        if ledger.api_key is not None and not secrets.compare_digest(
                self.headers.get("TRON-PRO-API-KEY", ""), ledger.api_key):
            return self._reply(401, {"Success": False, "Error": "ApiKey not exists"})
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return self._reply(400, {"Error": "request body is not JSON"})
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with ledger.lock:
            status, answer = self._route(method, url.path, query, payload if isinstance(payload, dict) else {})
        self._reply(status, answer)

    def _route(self, method: str, path: str, query: dict, payload: dict) -> tuple[int, Any]:
        ledger = self.ledger
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if method == "GET" and len(parts) >= 3 and parts[:2] == ["v1", "accounts"]:
            address = parts[2]
            if not is_tron_address(address):
                return 400, {"success": False, "error": f"invalid address: {address}", "statusCode": 400}
            meta = {"at": _now_ms()}
            if len(parts) == 3:
                data = ledger.account_json(address)
                return 200, {"data": data, "success": True, "meta": {**meta, "page_size": len(data)}}
            if parts[3:] in (["transactions"], ["transactions", "trc20"]):
                items = ledger.history(address, query, token=parts[3:] == ["transactions", "trc20"])
                return 200, _page(items, query, meta, path)
        if method == "POST":
            if path in ("/wallet/getnowblock", "/walletsolidity/getnowblock"):
                return 200, ledger.block_json(ledger.tip() if path.startswith("/wallet/") else ledger.solidified())
            if path == "/wallet/getblockbynum":
                number = payload.get("num")
                found = number if isinstance(number, int) and 0 <= number < len(ledger.blocks) else None
                return 200, {} if found is None else ledger.block_json(ledger.blocks[found])
            if path == "/wallet/getblockbyid":
                block = next((b for b in ledger.blocks if b.block_id == payload.get("value")), None)
                return 200, {} if block is None else ledger.block_json(block)
            if path in ("/wallet/gettransactionbyid", "/wallet/gettransactioninfobyid"):
                found = ledger.find(str(payload.get("value", "")).lower())
                if found is None:
                    return 200, {}
                tx, block = found
                if path.endswith("infobyid"):
                    return 200, {} if block is None else ledger.tx_info_json(tx, block)
                return 200, ledger.tx_json(tx)
        return 404, {"Error": f"no route {method} {path}"}

    def _control(self, action: str, body: bytes) -> None:
        token = self.ledger.control_token
        if token is None or not secrets.compare_digest(self.headers.get("Authorization", ""), f"Bearer {token}"):
            return self._reply(401, {"error": "missing or wrong bearer token"})

        try:
            result = control_action(self.ledger, action, json.loads(body or b"{}"))
        except LookupError:
            return self._reply(404, {"error": f"no control action {action}"})
        except (ValueError, TypeError) as exc:
            return self._reply(400, {"error": str(exc)})
        self._reply(200, {"ok": True, "result": result})


def _page(items: list[dict], query: dict, meta: dict, path: str) -> dict:
    """TronGrid's paging: ``limit`` (max 200) and an opaque ``fingerprint`` for the next page."""
    limit = min(max(int(query.get("limit", 20)), 1), 200)
    start = int(query.get("fingerprint") or 0)
    page = items[start:start + limit]
    meta = {**meta, "page_size": len(page)}
    if start + limit < len(items):
        meta["fingerprint"] = str(start + limit)
        meta["links"] = {"next": f"{path}?{urlencode({**query, 'fingerprint': start + limit})}"}
    return {"data": page, "success": True, "meta": meta}


def start_tron_emulator(*, port: int = 0, api_key: str | None = None, block_time: float | None = None,
                        solidify_depth: int = SOLIDIFY_DEPTH, control_token: str | None = None,
                        verbose: bool = False) -> TronLedger:
    """Serve a fresh simulated TRON ledger on 127.0.0.1:`port` (0: any free port)."""
    ledger = TronLedger(api_key=api_key, solidify_depth=solidify_depth, control_token=control_token)
    handler = type("TronHandler", (_Handler,), {"ledger": ledger, "verbose": verbose})
    ledger._server = Server((HOST, port), handler)
    ledger.url = f"http://{HOST}:{ledger._server.server_address[1]}"
    ledger.control_url = f"{ledger.url}/_control"
    threading.Thread(target=ledger._server.serve_forever, kwargs={"poll_interval": 0.1}, name="tron-grid",
                     daemon=True).start()
    ledger.set_block_time(block_time)
    return ledger


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.tron", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8590)
    parser.add_argument("--credentials-file", required=True, help="where to write url, token and api_key")
    parser.add_argument("--block-time", type=float, default=3.0, help="seconds between blocks (TRON: 3)")
    parser.add_argument("--api-key", default=os.environ.get("TRONGRID_API_KEY"),
                        help="TRON-PRO-API-KEY to require (default: generated for the run)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    api_key = args.api_key or secrets.token_hex(16)
    ledger = start_tron_emulator(port=args.port, api_key=api_key, block_time=args.block_time,
                                 control_token=secrets.token_urlsafe(32), verbose=args.verbose)
    write_credentials(args.credentials_file, {"url": ledger.url, "control_url": ledger.control_url,
                                              "token": ledger.control_token, "api_key": api_key,
                                              "usdt_contract": ledger.usdt_address})
    print(f"TRON emulator: TronGrid API {ledger.url}, USDT {ledger.usdt_address}", flush=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stopping.set())
    try:
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        ledger.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
