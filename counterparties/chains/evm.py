"""Ethereum (and any EVM chain) through a node's JSON-RPC, with web3.py's HTTPProvider: ETH and ERC-20 tokens.

Read-only: the portal never signs here, so there is no signing middleware and no account.

* ``balance``: ``eth_getBalance`` for the native coin, the token's ``balanceOf`` through ``eth_call`` for a
  token, both at the tip's height (so the answer names the block it is true at).
* ``transfers_to``: tokens through ``eth_getLogs`` on the ``Transfer`` event filtered by the recipient topic
  (in windows of :data:`LOG_WINDOW` blocks); the native coin by reading the blocks' transactions, which a
  node offers no index for, so at most ``max_scan_blocks`` blocks are read per call. Neither looks at the
  mempool: a node's view of other people's pending transactions is neither complete nor stable, and the
  portal waits for confirmations anyway.
* ``transaction``: the receipt decides. Status 0 is FAILED; confirmations are ``tip - height + 1``;
  ``finalized`` compares with the node's ``finalized`` block where the node has one; the fee is
  ``gasUsed × effectiveGasPrice``. A transaction the node no longer knows, last seen in a block that is no
  longer on the main chain, is REORGED. A re-orged transaction back in the mempool is PENDING.

Errors: connection refused, timeouts, HTTP 429/5xx and node-side JSON-RPC failures are
:class:`TransientError`; a malformed answer, an address with a wrong checksum, an unknown asset, HTTP 4xx
are :class:`PermanentError`. Amounts are exact integers (wei, the token's base units).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector, is_checksum_address, is_hex_address, to_checksum_address
from web3 import HTTPProvider, Web3
from web3.exceptions import BadResponseFormat, BlockNotFound, TransactionNotFound, Web3RPCError

from counterparties.chains.base import AssetRef, Balance, ChainTransfer, TxState, TxStatus
from counterparties.errors import ErrorCode, PermanentError, TransientError

TRANSFER_TOPIC = "0x" + Web3.keccak(text="Transfer(address,address,uint256)").hex().removeprefix("0x")
BALANCE_OF = function_signature_to_4byte_selector("balanceOf(address)")
LOG_WINDOW = 5_000  # blocks per eth_getLogs: public endpoints refuse wider ranges
MAX_SCAN_BLOCKS = 5_000  # blocks read per native-coin transfers_to call
TXID = re.compile(r"0x[0-9a-fA-F]{64}")
# JSON-RPC error codes that say the node, not the request, is at fault (EIP-1474: -32603 internal,
# -32000 generic server error such as "header not found" on a lagging node, -32005 limit exceeded).
TRANSIENT_RPC_CODES = {-32603, -32000, -32005, -32002}

T = TypeVar("T")


class EvmChain:
    """A :class:`~counterparties.chains.base.ChainAdapter` for an EVM chain's JSON-RPC node."""

    def __init__(self, url: str, *, chain: str = "ethereum", timeout: float = 10.0,
                 max_scan_blocks: int = MAX_SCAN_BLOCKS) -> None:
        self.chain = chain
        self.max_scan_blocks = max_scan_blocks
        # No retries inside web3: the caller decides (a TransientError is retried by the task, with a bound).
        self._w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None))

    def __repr__(self) -> str:
        return f"EvmChain({self.chain})"

    # -- ChainAdapter ----------------------------------------------------------------------------------------

    def tip_height(self) -> int:
        return self._int(self._ask("eth_blockNumber", lambda: self._w3.eth.block_number), "block number")

    def balance(self, address: str, asset: AssetRef) -> Balance:
        address = self._address(address)
        contract = self._contract(asset)
        height = self.tip_height()
        if contract is None:
            amount = self._ask("eth_getBalance", lambda: self._w3.eth.get_balance(address, block_identifier=height))
            return Balance(address=address, amount=self._int(amount, "balance"), height=height)
        data = BALANCE_OF + abi_encode(["address"], [address])
        raw = self._ask("eth_call", lambda: self._w3.eth.call({"to": contract, "data": data}, block_identifier=height))
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise self._bad(f"balanceOf at {contract} answered {len(raw or b'')} bytes, not a uint256 "
                            "(is it a token contract on this chain?)")
        return Balance(address=address, amount=int.from_bytes(raw, "big"), height=height)

    def transfers_to(self, address: str, asset: AssetRef, since_height: int = 0) -> list[ChainTransfer]:
        address = self._address(address)
        contract = self._contract(asset)
        tip = self.tip_height()
        if contract is None:
            return self._native_transfers_to(address, since_height + 1, tip)
        recipient_topic = "0x" + "00" * 12 + address[2:].lower()
        transfers = []
        for start in range(since_height + 1, tip + 1, LOG_WINDOW):
            end = min(start + LOG_WINDOW - 1, tip)
            logs = self._ask("eth_getLogs", lambda: self._w3.eth.get_logs({
                "fromBlock": start, "toBlock": end, "address": contract,
                "topics": [TRANSFER_TOPIC, None, recipient_topic],
            }))
            transfers += [t for t in (self._token_transfer(log, contract) for log in logs) if t is not None]
        return transfers

    def transaction(self, txid: str, asset: AssetRef, seen_block_hash: str = "") -> TxStatus:
        if not isinstance(txid, str) or not TXID.fullmatch(txid):
            raise PermanentError(f"not an Ethereum transaction id: {txid!r}", party=self.chain,
                                 code=ErrorCode.VALIDATION)
        txid = txid.lower()
        contract = self._contract(asset)
        tx = self._optional("eth_getTransactionByHash", lambda: self._w3.eth.get_transaction(txid))
        if tx is None:
            if seen_block_hash and not self._on_main_chain(seen_block_hash):
                return TxStatus(txid=txid, state=TxState.REORGED)
            return TxStatus(txid=txid, state=TxState.UNKNOWN)
        receipt = None
        if tx.get("blockNumber") is not None:
            receipt = self._optional("eth_getTransactionReceipt",
                                     lambda: self._w3.eth.get_transaction_receipt(txid))
        if receipt is None:  # in the mempool (or mined an instant ago and not indexed yet)
            return TxStatus(txid=txid, state=TxState.PENDING)
        try:
            height = self._int(receipt["blockNumber"], "blockNumber")
            block_hash = self._hash(receipt["blockHash"])
            status = self._int(receipt["status"], "status")
            fee = self._int(receipt["gasUsed"], "gasUsed") * self._int(receipt["effectiveGasPrice"],
                                                                      "effectiveGasPrice")
            if contract is None:
                value = self._int(tx["value"], "value")
                transfers = (ChainTransfer(txid=txid, from_address=tx["from"], to_address=tx["to"] or "",
                                           amount=value, height=height, block_hash=block_hash),) \
                    if status == 1 and value > 0 else ()
            else:
                decoded = (self._token_transfer(log, contract) for log in receipt["logs"])
                transfers = tuple(t for t in decoded if t is not None)
        except (KeyError, TypeError) as exc:
            raise self._bad(f"receipt of {txid} lacks {exc}") from None
        tip = self.tip_height()
        return TxStatus(
            txid=txid,
            state=TxState.CONFIRMED if status == 1 else TxState.FAILED,
            confirmations=max(0, tip - height + 1),
            height=height,
            block_hash=block_hash,
            finalized=height <= self._finalized_height(),
            fee=fee,
            transfers=transfers,
        )

    # -- reading ---------------------------------------------------------------------------------------------

    def _native_transfers_to(self, address: str, first: int, tip: int) -> list[ChainTransfer]:
        if tip - first + 1 > self.max_scan_blocks:
            raise PermanentError(
                f"reading {tip - first + 1} blocks for ETH transfers exceeds the limit of {self.max_scan_blocks}; "
                "ask from a recent height", party=self.chain, code=ErrorCode.LIMIT_EXCEEDED)
        transfers = []
        for height in range(first, tip + 1):
            block = self._ask("eth_getBlockByNumber",
                              lambda: self._w3.eth.get_block(height, full_transactions=True))
            try:
                for tx in block["transactions"]:
                    if (tx["to"] or "").lower() != address.lower() or self._int(tx["value"], "value") == 0:
                        continue
                    txid = self._hash(tx["hash"])
                    receipt = self._ask("eth_getTransactionReceipt",
                                        lambda: self._w3.eth.get_transaction_receipt(txid))
                    if self._int(receipt["status"], "status") != 1:
                        continue  # reverted: nothing arrived
                    transfers.append(ChainTransfer(txid=txid, from_address=tx["from"], to_address=address,
                                                   amount=self._int(tx["value"], "value"), height=height,
                                                   block_hash=self._hash(block["hash"])))
            except (KeyError, TypeError) as exc:
                raise self._bad(f"block {height} lacks {exc}") from None
        return transfers

    def _token_transfer(self, log: Any, contract: str) -> ChainTransfer | None:
        """A ``Transfer(from, to, value)`` log of `contract` as a transfer (None for other logs)."""
        try:
            if log.get("removed") or log["address"].lower() != contract.lower():
                return None
            topics = [self._hash(t) for t in log["topics"]]
            if len(topics) != 3 or topics[0] != TRANSFER_TOPIC:
                return None
            data = bytes(log["data"])
            if len(data) != 32:
                raise self._bad(f"a Transfer log of {contract} carries {len(data)} bytes, not a uint256")
            return ChainTransfer(
                txid=self._hash(log["transactionHash"]),
                from_address=to_checksum_address("0x" + topics[1][-40:]),
                to_address=to_checksum_address("0x" + topics[2][-40:]),
                amount=int.from_bytes(data, "big"),
                height=self._int(log["blockNumber"], "blockNumber"),
                block_hash=self._hash(log["blockHash"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise self._bad(f"a log of {contract} lacks {exc}") from None

    def _finalized_height(self) -> int:
        """The node's finalized block; -1 where the node has no such tag (nothing is called final then)."""
        try:
            block = self._optional("eth_getBlockByNumber", lambda: self._w3.eth.get_block("finalized"))
        except PermanentError:
            return -1  # an older node or a chain without finality: "finalized" is not a block it knows
        return self._int(block["number"], "number") if block else -1

    def _on_main_chain(self, block_hash: str) -> bool:
        block = self._optional("eth_getBlockByHash", lambda: self._w3.eth.get_block(block_hash))
        if block is None:
            return False  # the node forgot it: side blocks are not kept
        canonical = self._optional("eth_getBlockByNumber", lambda: self._w3.eth.get_block(block["number"]))
        return canonical is not None and self._hash(canonical["hash"]) == self._hash(block["hash"])

    # -- checking and error mapping --------------------------------------------------------------------------

    def _address(self, address: str) -> str:
        if not isinstance(address, str) or not is_hex_address(address):
            raise PermanentError(f"not an Ethereum address: {address!r}", party=self.chain, code=ErrorCode.VALIDATION)
        body = address[2:]
        if body != body.lower() and body != body.upper() and not is_checksum_address(address):
            # Mixed case is an EIP-55 checksum; a wrong one means a mistyped address.
            raise PermanentError(f"the address {address} has a wrong EIP-55 checksum (mistyped?)", party=self.chain,
                                 code=ErrorCode.VALIDATION)
        return to_checksum_address(address)

    def _contract(self, asset: AssetRef) -> str | None:
        """The token contract of `asset`, or None for the chain's native coin."""
        if asset.chain != self.chain:
            raise PermanentError(f"{asset.symbol} lives on {asset.chain}, not {self.chain}", party=self.chain,
                                 code=ErrorCode.VALIDATION)
        return self._address(asset.contract) if asset.contract else None

    def _bad(self, message: str) -> PermanentError:
        return PermanentError(f"malformed node answer: {message}", party=self.chain, code=ErrorCode.BAD_RESPONSE)

    def _int(self, value: Any, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(f"{what} is {value!r}, not an integer")
        return value

    def _hash(self, value: Any) -> str:
        if isinstance(value, (bytes, bytearray)):
            return "0x" + bytes(value).hex()
        if isinstance(value, str) and value.startswith("0x"):
            return value.lower()
        raise self._bad(f"{value!r} is not a hash")

    def _optional(self, method: str, call: Callable[[], T]) -> T | None:
        """A read whose "not found" is an answer (None), not an error."""
        return self._ask(method, call, missing_ok=True)

    def _ask(self, method: str, call: Callable[[], T], *, missing_ok: bool = False) -> T | None:
        try:
            return call()
        except (TransactionNotFound, BlockNotFound):
            if missing_ok:
                return None
            # Something the tip just showed is gone: the chain moved under us (a re-org). Ask again.
            raise TransientError(f"{method}: the node no longer has what it just reported (re-org?)",
                                 party=self.chain, code=ErrorCode.SERVER_ERROR) from None
        except requests.Timeout:
            raise TransientError(f"{method}: the node did not answer in time", party=self.chain,
                                 code=ErrorCode.TIMEOUT) from None
        except requests.ConnectionError as exc:
            raise TransientError(f"{method}: cannot reach the node ({type(exc).__name__})", party=self.chain,
                                 code=ErrorCode.CONNECTION) from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status == 429:
                raise TransientError(f"{method}: the node is rate limiting us", party=self.chain,
                                     code=ErrorCode.RATE_LIMITED, http_status=status) from None
            if status >= 500:
                raise TransientError(f"{method}: the node answered HTTP {status}", party=self.chain,
                                     code=ErrorCode.SERVER_ERROR, http_status=status) from None
            code = ErrorCode.AUTH_FAILED if status in (401, 403) else ErrorCode.REJECTED
            raise PermanentError(f"{method}: the node refused the request with HTTP {status}", party=self.chain,
                                 code=code, http_status=status) from None
        except Web3RPCError as exc:
            error = exc.rpc_response.get("error", {}) if isinstance(exc.rpc_response, dict) else {}
            rpc_code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else str(exc)
            if rpc_code in TRANSIENT_RPC_CODES:
                raise TransientError(f"{method}: node error {rpc_code}: {message}", party=self.chain,
                                     code=ErrorCode.SERVER_ERROR, venue_code=str(rpc_code)) from None
            raise PermanentError(f"{method}: node refused: {message}", party=self.chain, code=ErrorCode.REJECTED,
                                 venue_code=None if rpc_code is None else str(rpc_code)) from None
        except (BadResponseFormat, ValueError, KeyError, TypeError) as exc:
            # Not JSON, not JSON-RPC, or fields web3 could not format: retrying will not fix the node's answer.
            raise self._bad(f"{method}: {exc}") from None

