"""A local Ethereum node for tests and the demo: eth-tester (py-evm) behind an HTTP JSON-RPC server.

:func:`start_evm_node` starts an in-process EVM with an ERC-20 "USDT" (6 decimals, compiled offline by vyper
from ``emulators/contracts/usdt.vy``) and serves standard Ethereum JSON-RPC on 127.0.0.1, so the portal's
:class:`counterparties.chains.evm.EvmChain` talks to it exactly as to a real node. The returned
:class:`EvmNode` implements :class:`emulators.chains.ChainControl` for chain ``"ethereum"``.

How it stands in for a real node:

* The mempool is py-evm's pending block: ``send`` signs a transaction with the key the emulator holds and
  applies it to the pending block, so its exact gas use (and fee) is known before it is mined, and JSON-RPC
  shows it as pending (``blockNumber: null``, no receipt) until ``mine``.
* ``finalized`` and ``safe`` are emulated as ``tip - finality_depth`` (eth-tester has no consensus layer and
  would answer "latest"); ``finality_depth`` defaults to :data:`FINALITY_DEPTH`.
* A re-org reverts to the block ``depth`` below the tip (eth-tester snapshots, one per block) and mines
  ``depth + 1`` empty blocks (distinct hashes: each post-merge block gets a random ``mixHash``). The
  transactions of the replaced blocks are dropped, and so is the mempool.
* Blocks are produced only by ``mine()`` unless a block time is set (``set_block_time``), as in the demo.

Served methods: ``web3_clientVersion``, ``net_version``, ``eth_chainId``, ``eth_blockNumber``,
``eth_gasPrice``, ``eth_getBalance``, ``eth_getTransactionCount``, ``eth_getCode``, ``eth_call``,
``eth_getLogs``, ``eth_getTransactionByHash``, ``eth_getTransactionReceipt``, ``eth_getBlockByNumber``,
``eth_getBlockByHash``, ``eth_sendRawTransaction``; errors in the JSON-RPC 2.0 shape.

For the demo: ``python -m emulators.evm --port P --control-port C --credentials-file F`` serves JSON-RPC on
P and a small JSON control API on C (``POST /new_address``, ``/fund``, ``/send``, ``/mine``, ``/reorg``,
``/assets``; bearer token), and writes ``{url, control_url, token, usdt_contract}`` to F (mode 0600).
"""

from __future__ import annotations

import argparse
import functools
import json
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import eth_abi
from eth_account import Account
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import BlockNotFound, TransactionFailed, TransactionNotFound, ValidationError
from eth_utils import function_signature_to_4byte_selector, is_hex_address, to_checksum_address

from counterparties.chains.base import AssetRef
from emulators.chains import SentTx
from emulators.serving import JsonHandler, Server, control_action, write_credentials

HOST = "127.0.0.1"
CHAIN = "ethereum"
FINALITY_DEPTH = 8  # blocks below the tip reported as "finalized" (a real chain: about two epochs, 64 blocks)
ETH_TRANSFER_GAS = 21_000
TOKEN_TRANSFER_GAS = 100_000  # limit; a vyper ERC-20 transfer uses about 35-52k
GAS_ALLOWANCE = 10**16  # 0.01 ETH: what `fund` gives a token holder so it can pay for transfers
TREASURY_ETH = 10**24  # the emulator's own account: mints tokens, funds addresses
MAX_LOG_RANGE = 10_000  # blocks per eth_getLogs, as public endpoints limit it
CONTRACT_SOURCE = Path(__file__).with_name("contracts") / "usdt.vy"
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


@functools.cache
def usdt_contract() -> dict:
    """ABI and deployment bytecode of the emulated USDT, compiled from the committed source (~0.5 s, once)."""
    import vyper  # here, not at import time: only the node needs the compiler

    compiled = vyper.compile_code(CONTRACT_SOURCE.read_text(), output_formats=["abi", "bytecode"])
    return {"abi": compiled["abi"], "bytecode": compiled["bytecode"]}


def _call_data(signature: str, types: list[str], values: list[Any]) -> bytes:
    return function_signature_to_4byte_selector(signature) + eth_abi.encode(types, values)


class RpcError(Exception):
    """A JSON-RPC error answer (code per EIP-1474)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class EvmNode:
    """The controller of one emulated Ethereum chain (implements ``ChainControl``)."""

    chain = CHAIN

    def __init__(self, *, finality_depth: int = FINALITY_DEPTH) -> None:
        # One lock for the whole EVM: eth-tester and py-evm are not thread-safe, and the HTTP server, the
        # block timer and the controls all reach them.
        self.lock = threading.RLock()
        self.finality_depth = finality_depth
        self.url = ""
        self.control_url = ""
        self.tester = EthereumTester(backend=PyEVMBackend())
        self.chain_id: int = self.tester.backend.chain.chain_id
        self._keys: dict[str, Any] = {}  # checksum address -> eth_account LocalAccount
        self._snapshots: dict[int, int] = {0: self.tester.take_snapshot()}  # height -> eth-tester snapshot
        self._server: Server | None = None
        self._control_server: Server | None = None
        self._miner: threading.Thread | None = None
        self._miner_stop = threading.Event()
        self._block_time: float | None = None

        prefunded_key = self.tester.backend.account_keys[0]
        self.treasury = self._hold(Account.from_key(prefunded_key.to_bytes()))
        with self.lock:
            txid = self._sign_and_send(self.treasury, to=None, data=bytes.fromhex(
                usdt_contract()["bytecode"].removeprefix("0x")), gas=1_500_000)
            self.mine()
            self.usdt_address = to_checksum_address(self.tester.get_transaction_receipt(txid)["contract_address"])
            # A re-org must not unwind the token itself.
            self._first_reorgable = self.tip() + 1
        self.eth = AssetRef("ETH", CHAIN, 18)
        self.usdt = AssetRef("USDT", CHAIN, 6, contract=self.usdt_address)

    # -- ChainControl ----------------------------------------------------------------------------------------

    def assets(self) -> list[AssetRef]:
        return [self.eth, self.usdt]

    def new_address(self) -> str:
        with self.lock:
            return self._hold(Account.create()).address

    def fund(self, address: str, asset: AssetRef, amount: int) -> str:
        address = self._address(address)
        self._check_amount(amount)
        with self.lock:
            if self._is_token(asset):
                txid = self._sign_and_send(self.treasury, to=self.usdt_address, gas=TOKEN_TRANSFER_GAS,
                                           data=_call_data("mint(address,uint256)", ["address", "uint256"],
                                                           [address, amount]))
                if self.tester.get_balance(address) < GAS_ALLOWANCE:
                    self._sign_and_send(self.treasury, to=address, value=GAS_ALLOWANCE, gas=ETH_TRANSFER_GAS)
            else:
                txid = self._sign_and_send(self.treasury, to=address, value=amount, gas=ETH_TRANSFER_GAS)
            self.mine()
            return txid

    def send(self, from_address: str, to_address: str, asset: AssetRef, amount: int, *,
             subtract_fee: bool = False) -> SentTx:
        sender = self._keys.get(self._address(from_address))
        if sender is None:
            raise ValueError(f"the emulator holds no key for {from_address}")
        to_address = self._address(to_address)
        self._check_amount(amount)
        with self.lock:
            if self._is_token(asset):
                # The fee is paid in ETH, never in the token: subtract_fee has nothing to subtract from.
                txid = self._sign_and_send(sender, to=self.usdt_address, gas=TOKEN_TRANSFER_GAS,
                                           data=_call_data("transfer(address,uint256)", ["address", "uint256"],
                                                           [to_address, amount]))
            else:
                value = amount
                if subtract_fee:
                    # A legacy-priced transfer to a plain account costs exactly 21,000 gas at its gas price.
                    value = amount - ETH_TRANSFER_GAS * self._gas_price()
                    if value <= 0:
                        raise ValueError(f"amount {amount} does not cover the fee")
                txid = self._sign_and_send(sender, to=to_address, value=value, gas=ETH_TRANSFER_GAS)
            # Applied to the pending block already: its receipt there is exactly what mining will record
            # (as long as nothing is re-ordered before it).
            receipt = self.tester.get_transaction_receipt(txid)
            fee = receipt["gas_used"] * receipt["effective_gas_price"]
            if receipt["status"] != 1:
                arrived = 0
            else:
                arrived = amount if self._is_token(asset) else value
            return SentTx(txid=txid, amount=arrived, fee=fee)

    def mine(self, blocks: int = 1) -> int:
        if blocks < 1:
            raise ValueError("mine at least one block")
        with self.lock:
            for _ in range(blocks):
                self.tester.mine_blocks(1)
                self._snapshots[self.tip()] = self.tester.take_snapshot()
            return self.tip()

    def reorg(self, depth: int) -> None:
        with self.lock:
            tip = self.tip()
            fork_point = tip - depth
            if depth < 1 or fork_point < self._first_reorgable:
                raise ValueError(f"cannot re-organise {depth} blocks below tip {tip} "
                                 f"(the token was deployed at {self._first_reorgable - 1})")
            self.tester.revert_to_snapshot(self._snapshots[fork_point])
            for height in [h for h in self._snapshots if h > fork_point]:
                del self._snapshots[height]
            self.mine(depth + 1)

    def set_block_time(self, seconds: float | None) -> None:
        if seconds is not None and seconds <= 0:
            raise ValueError("block time must be positive")
        self._stop_miner()
        self._block_time = seconds
        if seconds is not None:
            self._miner_stop = threading.Event()
            self._miner = threading.Thread(target=self._mine_every, args=(seconds, self._miner_stop),
                                           name="evm-miner", daemon=True)
            self._miner.start()

    def stop(self) -> None:
        self._stop_miner()
        for server in (self._server, self._control_server):
            if server is not None:
                server.stop()
        self._server = self._control_server = None

    def __enter__(self) -> EvmNode:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------------------------------------

    def tip(self) -> int:
        return self.tester.get_block_by_number("latest")["number"]

    def finalized_height(self) -> int:
        return max(0, self.tip() - self.finality_depth)

    def _hold(self, account) -> Any:
        self._keys[account.address] = account
        return account

    def _is_token(self, asset: AssetRef) -> bool:
        if asset.chain != CHAIN:
            raise ValueError(f"{asset.symbol} is on {asset.chain}, not {CHAIN}")
        if asset.contract:
            if asset.contract.lower() != self.usdt_address.lower():
                raise ValueError(f"no token at {asset.contract} on this chain")
            return True
        if asset.symbol != "ETH":
            raise ValueError(f"{asset.symbol} is not this chain's native coin and has no contract")
        return False

    @staticmethod
    def _address(address: str) -> str:
        if not isinstance(address, str) or not is_hex_address(address):
            raise ValueError(f"not an Ethereum address: {address!r}")
        return to_checksum_address(address)

    @staticmethod
    def _check_amount(amount: int) -> None:
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise ValueError(f"amount must be a positive integer of base units, not {amount!r}")

    def _gas_price(self) -> int:
        # Twice the next block's base fee, so the price stays valid while empty blocks lower the base fee.
        return 2 * self.tester.get_block_by_number("pending")["base_fee_per_gas"]

    def _sign_and_send(self, account, *, to: str | None, gas: int, value: int = 0, data: bytes = b"") -> str:
        """Sign a legacy-priced transaction with the account's key and put it in the pending block."""
        tx = {
            "chainId": self.chain_id,
            "nonce": self.tester.get_nonce(account.address, "pending"),
            "gas": gas,
            "gasPrice": self._gas_price(),
            "value": value,
            "data": data,
            "to": to or b"",
        }
        raw = account.sign_transaction(tx).raw_transaction
        # The backend's own path: it applies the transaction to the pending block, which is our mempool.
        return "0x" + self.tester.backend.send_raw_transaction(bytes(raw)).hex()

    def _mine_every(self, seconds: float, stop: threading.Event) -> None:
        while not stop.wait(seconds):
            self.mine()

    def _stop_miner(self) -> None:
        if self._miner is not None:
            self._miner_stop.set()
            self._miner.join()
            self._miner = None

    # -- JSON-RPC --------------------------------------------------------------------------------------------

    def rpc(self, method: str, params: list) -> Any:
        """Answer one JSON-RPC call (raises :class:`RpcError`)."""
        handler = _RPC_METHODS.get(method)
        if handler is None:
            raise RpcError(-32601, f"the method {method} does not exist/is not available")
        if not isinstance(params, list):
            raise RpcError(-32602, "invalid params: expected an array")
        with self.lock:
            try:
                return handler(self, *params)
            except TypeError as exc:
                raise RpcError(-32602, f"invalid params for {method}: {exc}") from None
            except TransactionFailed as exc:
                raise RpcError(3, f"execution reverted: {exc}") from None
            except ValidationError as exc:
                raise RpcError(-32602, f"invalid params: {exc}") from None
            except (RpcError, _NotFound):
                raise
            except Exception as exc:  # py-evm's own errors: the node's fault as far as a client can tell
                raise RpcError(-32603, f"internal error: {type(exc).__name__}: {exc}") from None

    def _height(self, tag: Any) -> int:
        """A block parameter as a height on the main chain."""
        tip = self.tip()
        if tag in (None, "latest", "pending"):
            return tip
        if tag == "earliest":
            return 0
        if tag in ("finalized", "safe"):
            return self.finalized_height()
        number = _quantity(tag)
        if number > tip:
            raise _NotFound
        return number

    def _height_at_most_tip(self, tag: Any) -> int:
        try:
            return self._height(tag)
        except _NotFound:
            return self.tip() + 1

    def _block(self, block: dict, full: bool) -> dict:
        txs = [self._tx(self.tester.get_transaction_by_hash(h)) for h in block["transactions"]] if full \
            else list(block["transactions"])
        return {
            "number": hex(block["number"]), "hash": block["hash"], "parentHash": block["parent_hash"],
            "nonce": block["nonce"], "sha3Uncles": block["sha3_uncles"],
            "logsBloom": "0x" + block["logs_bloom"].to_bytes(256, "big").hex(),
            "transactionsRoot": block["transactions_root"], "stateRoot": block["state_root"],
            "receiptsRoot": block["receipts_root"], "miner": block["coinbase"],
            "difficulty": hex(block["difficulty"]), "totalDifficulty": hex(block["total_difficulty"]),
            "extraData": block["extra_data"], "size": hex(block["size"]), "gasLimit": hex(block["gas_limit"]),
            "gasUsed": hex(block["gas_used"]), "timestamp": hex(block["timestamp"]),
            "baseFeePerGas": hex(block["base_fee_per_gas"]), "mixHash": block["mix_hash"],
            "transactions": txs, "uncles": list(block["uncles"]),
        }

    def _tx(self, tx: dict) -> dict:
        mined = tx["block_hash"] is not None
        if not mined:
            # eth-tester reports a transaction of the pending block with the block's coming number; a node
            # says null until it is mined.
            tx = {**tx, "block_number": None, "transaction_index": None}
        return {
            "hash": tx["hash"], "nonce": hex(tx["nonce"]), "blockHash": tx["block_hash"],
            "blockNumber": None if tx["block_number"] is None else hex(tx["block_number"]),
            "transactionIndex": None if tx["transaction_index"] is None else hex(tx["transaction_index"]),
            "from": tx["from"], "to": tx["to"] or None, "value": hex(tx["value"]), "gas": hex(tx["gas"]),
            "gasPrice": hex(tx["gas_price"]), "input": tx["data"], "type": tx["type"],
            "chainId": hex(self.chain_id), "v": hex(tx["v"]), "r": hex(tx["r"]), "s": hex(tx["s"]),
        }

    def _receipt(self, receipt: dict) -> dict | None:
        if receipt["block_hash"] is None:
            return None  # still pending: a node has no receipt yet
        return {
            "transactionHash": receipt["transaction_hash"],
            "transactionIndex": hex(receipt["transaction_index"]),
            "blockHash": receipt["block_hash"], "blockNumber": hex(receipt["block_number"]),
            "from": receipt["from"], "to": receipt["to"] or None,
            "cumulativeGasUsed": hex(receipt["cumulative_gas_used"]), "gasUsed": hex(receipt["gas_used"]),
            "effectiveGasPrice": hex(receipt["effective_gas_price"]),
            "contractAddress": receipt["contract_address"], "status": hex(receipt["status"]),
            "type": receipt["type"], "logs": [_log(entry) for entry in receipt["logs"]],
            "logsBloom": "0x" + "00" * 256,  # nobody here filters by bloom
        }

    def _logs(self, criteria: dict) -> list[dict]:
        if not isinstance(criteria, dict):
            raise RpcError(-32602, "invalid params: the filter must be an object")
        if criteria.get("blockHash"):
            heights = [self._rpc_block_by_hash(criteria["blockHash"])]
        else:
            # A range reaching past the tip is cut at the tip, as nodes do.
            start = self._height_at_most_tip(criteria.get("fromBlock", "latest"))
            end = self._height_at_most_tip(criteria.get("toBlock", "latest"))
            if end - start + 1 > MAX_LOG_RANGE:
                raise RpcError(-32005, f"query exceeds the limit of {MAX_LOG_RANGE} blocks")
            heights = range(start, end + 1)
        addresses = criteria.get("address") or []
        addresses = {a.lower() for a in ([addresses] if isinstance(addresses, str) else addresses)}
        topics = criteria.get("topics") or []
        found = []
        for height in heights:
            for txid in self.tester.get_block_by_number(height)["transactions"]:
                for entry in self.tester.get_transaction_receipt(txid)["logs"]:
                    if addresses and entry["address"].lower() not in addresses:
                        continue
                    if _topics_match(entry["topics"], topics):
                        found.append(_log(entry))
        return found

    def _rpc_block_by_hash(self, block_hash: str) -> int:
        try:
            return self.tester.get_block_by_hash(block_hash)["number"]
        except BlockNotFound:
            raise RpcError(-32000, f"block {block_hash} not found") from None


class _NotFound(Exception):
    """A block or transaction the node does not have: the JSON-RPC answer is null."""


def _quantity(value: Any) -> int:
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise RpcError(-32602, f"invalid params: {value!r} is not a hex quantity or block tag")


def _data(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RpcError(-32602, f"invalid params: {value!r} is not hex data")
    return value


def _rpc_address(value: Any) -> str:
    if not isinstance(value, str) or not is_hex_address(value):
        raise RpcError(-32602, f"invalid params: {value!r} is not an address")
    return to_checksum_address(value)


def _topics_match(actual: list, wanted: list) -> bool:
    for position, want in enumerate(wanted):
        if want is None:
            continue
        if position >= len(actual):
            return False
        options = [want] if isinstance(want, str) else want
        if actual[position].lower() not in {o.lower() for o in options}:
            return False
    return True


def _log(entry: dict) -> dict:
    return {
        "address": entry["address"], "topics": list(entry["topics"]), "data": entry["data"],
        "blockNumber": hex(entry["block_number"]), "blockHash": entry["block_hash"],
        "transactionHash": entry["transaction_hash"], "transactionIndex": hex(entry["transaction_index"]),
        "logIndex": hex(entry["log_index"]), "removed": False,
    }


def _get_block_by_number(node: EvmNode, tag: Any, full: bool = False) -> dict | None:
    try:
        return node._block(node.tester.get_block_by_number(node._height(tag)), bool(full))
    except _NotFound:
        return None


def _get_block_by_hash(node: EvmNode, block_hash: Any, full: bool = False) -> dict | None:
    try:
        return node._block(node.tester.get_block_by_hash(_data(block_hash)), bool(full))
    except BlockNotFound:
        return None


def _get_transaction(node: EvmNode, txid: Any) -> dict | None:
    try:
        return node._tx(node.tester.get_transaction_by_hash(_data(txid)))
    except TransactionNotFound:
        return None


def _get_receipt(node: EvmNode, txid: Any) -> dict | None:
    try:
        return node._receipt(node.tester.get_transaction_receipt(_data(txid)))
    except TransactionNotFound:
        return None


def _call(node: EvmNode, tx: dict, tag: Any = "latest") -> str:
    if not isinstance(tx, dict) or "to" not in tx:
        raise RpcError(-32602, "invalid params: eth_call needs a transaction object with 'to'")
    # eth-tester charges a call's gas to its sender; without one, the treasury (which can afford it) stands in.
    call = {"from": _rpc_address(tx.get("from") or node.treasury.address), "to": _rpc_address(tx["to"]),
            "data": _data(tx.get("data") or tx.get("input") or "0x")}
    try:
        return node.tester.call(call, node._height(tag))
    except _NotFound:
        raise RpcError(-32000, "header not found") from None


def _at_height(read: Callable[[EvmNode, str, int], Any]) -> Callable:
    def answer(node: EvmNode, address: Any, tag: Any = "latest") -> Any:
        try:
            return read(node, _rpc_address(address), node._height(tag))
        except _NotFound:
            raise RpcError(-32000, "header not found") from None
    return answer


def _send_raw(node: EvmNode, raw: Any) -> str:
    try:
        return "0x" + node.tester.backend.send_raw_transaction(bytes.fromhex(_data(raw)[2:])).hex()
    except (ValueError, ValidationError) as exc:
        raise RpcError(-32000, f"invalid transaction: {exc}") from None


_RPC_METHODS: dict[str, Callable[..., Any]] = {
    "web3_clientVersion": lambda node: "EvmEmulator/eth-tester",
    "net_version": lambda node: str(node.chain_id),
    "eth_chainId": lambda node: hex(node.chain_id),
    "eth_blockNumber": lambda node: hex(node.tip()),
    "eth_gasPrice": lambda node: hex(node._gas_price()),
    "eth_getBalance": _at_height(lambda node, a, h: hex(node.tester.get_balance(a, h))),
    "eth_getTransactionCount": _at_height(lambda node, a, h: hex(node.tester.get_nonce(a, h))),
    "eth_getCode": _at_height(lambda node, a, h: node.tester.get_code(a, h)),
    "eth_call": _call,
    "eth_getLogs": lambda node, criteria: node._logs(criteria),
    "eth_getTransactionByHash": _get_transaction,
    "eth_getTransactionReceipt": _get_receipt,
    "eth_getBlockByNumber": _get_block_by_number,
    "eth_getBlockByHash": _get_block_by_hash,
    "eth_sendRawTransaction": _send_raw,
}


# -- HTTP ----------------------------------------------------------------------------------------------------

class _RpcHandler(JsonHandler):
    server_version = "EvmEmulator/1"
    node: EvmNode

    def do_POST(self):
        body = self._body()
        if body is None:
            return
        try:
            request = json.loads(body)
        except ValueError:
            return self._reply(200, _rpc_error(None, RpcError(-32700, "parse error")))
        if isinstance(request, list):
            return self._reply(200, [self._one(r) for r in request] if request
                               else _rpc_error(None, RpcError(-32600, "invalid request: empty batch")))
        self._reply(200, self._one(request))

    def _one(self, request: Any) -> dict:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _rpc_error(None, RpcError(-32600, "invalid request"))
        request_id = request.get("id")
        try:
            result = self.node.rpc(request["method"], request.get("params", []))
        except RpcError as exc:
            return _rpc_error(request_id, exc)
        return {"jsonrpc": "2.0", "id": request_id, "result": result}


def _rpc_error(request_id: Any, exc: RpcError) -> dict:
    error = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


class _ControlHandler(JsonHandler):
    server_version = "EvmEmulatorControl/1"
    node: EvmNode
    token: str

    def do_POST(self):
        body = self._body()
        if body is None:
            return
        if not secrets.compare_digest(self.headers.get("Authorization", ""), f"Bearer {self.token}"):
            return self._reply(401, {"error": "missing or wrong bearer token"})
        try:
            result = control_action(self.node, self.path.strip("/"), json.loads(body or b"{}"))
        except LookupError:
            return self._reply(404, {"error": f"no control action {self.path}"})
        except (ValueError, TypeError) as exc:
            return self._reply(400, {"error": str(exc)})
        self._reply(200, {"ok": True, "result": result})


def start_evm_node(*, port: int = 0, block_time: float | None = None, finality_depth: int = FINALITY_DEPTH,
                   verbose: bool = False) -> EvmNode:
    """Start an emulated Ethereum chain serving JSON-RPC on 127.0.0.1:`port` (0: any free port)."""
    node = EvmNode(finality_depth=finality_depth)
    handler = type("RpcHandler", (_RpcHandler,), {"node": node, "verbose": verbose})
    node._server = Server((HOST, port), handler)
    node.url = f"http://{HOST}:{node._server.server_address[1]}"
    threading.Thread(target=node._server.serve_forever, kwargs={"poll_interval": 0.1}, name="evm-rpc",
                     daemon=True).start()
    node.set_block_time(block_time)
    return node


def serve_control(node: EvmNode, *, port: int, token: str) -> str:
    """Serve the control API for another process (the custody emulator); returns its URL."""
    handler = type("ControlHandler", (_ControlHandler,), {"node": node, "token": token})
    node._control_server = Server((HOST, port), handler)
    node.control_url = f"http://{HOST}:{node._control_server.server_address[1]}"
    threading.Thread(target=node._control_server.serve_forever, kwargs={"poll_interval": 0.1},
                     name="evm-control", daemon=True).start()
    return node.control_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.evm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8545)
    parser.add_argument("--control-port", type=int, default=8546)
    parser.add_argument("--credentials-file", required=True, help="where to write url, control_url and token")
    parser.add_argument("--block-time", type=float, default=None, help="seconds between blocks (default: none)")
    parser.add_argument("--finality-depth", type=int, default=FINALITY_DEPTH)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    node = start_evm_node(port=args.port, block_time=args.block_time, finality_depth=args.finality_depth,
                          verbose=args.verbose)
    token = secrets.token_urlsafe(32)
    serve_control(node, port=args.control_port, token=token)
    write_credentials(args.credentials_file, {"url": node.url, "control_url": node.control_url, "token": token,
                                              "usdt_contract": node.usdt_address})
    print(f"EVM emulator: JSON-RPC {node.url}, control {node.control_url}, USDT {node.usdt_address}", flush=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stopping.set())
    try:
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
