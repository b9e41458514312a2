"""Bitcoin-family chains (Bitcoin, Litecoin) read over Bitcoin Core's JSON-RPC.

``bitcoind`` and ``litecoind`` speak the same RPC, so one adapter serves both: :class:`BitcoinRpcChain`.
It never relies on the node's wallet, because the addresses the portal watches (a seizure address, the
custody address, an exchange's deposit address) are not the node's:

* a balance comes from ``scantxoutset`` over the UTXO set (confirmed coins only; the height is the scan's);
* transfers come from the blocks themselves (``getblockhash``/``getblock <hash> 2``) and the mempool
  (``getrawmempool true`` + ``getrawtransaction``);
* a transaction comes from ``getrawtransaction <txid> true``, which needs the node to run with
  ``-txindex=1`` (without it only mempool and wallet transactions are found); its fee is computed from the
  outputs it spends, looked up the same way.

The node answers amounts as JSON numbers in coins (``0.12345678``); they are parsed as ``Decimal`` (never a
float) and converted to base units (satoshi, litoshi) exactly, refusing anything finer than 8 decimals.

Errors: no connection, a timeout, HTTP 5xx and "still loading" (-28) are :class:`TransientError`; wrong
credentials (HTTP 401), an RPC error (invalid address, bad parameters) and an answer that is not JSON-RPC are
:class:`PermanentError`, each naming the RPC call. Credentials never appear in a message or a repr.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from counterparties.chains.base import AssetRef, Balance, ChainTransfer, TxState, TxStatus
from counterparties.errors import ErrorCode, PermanentError, TransientError

CHAINS = ("bitcoin", "litecoin")
DECIMALS = 8  # both chains count in 1e-8 of a coin

# RPC error codes (Bitcoin Core src/rpc/protocol.h) worth asking again later.
_RPC_TRANSIENT = {
    -28: "the node is still loading",  # RPC_IN_WARMUP
    -9: "the node is not connected to the network",  # RPC_CLIENT_NOT_CONNECTED
    -10: "the node is still downloading blocks",  # RPC_CLIENT_IN_INITIAL_DOWNLOAD
}
_RPC_NOT_FOUND = -5  # RPC_INVALID_ADDRESS_OR_KEY: also "no such transaction" / "block not found"
_RPC_INSUFFICIENT_FUNDS = -6
_RPC_VALIDATION = {-1, -3, -5, -8, -32602}  # misc (bad arguments), type error, invalid parameter

_TXID = re.compile(r"^[0-9a-fA-F]{64}$")
# Base58 and bech32 addresses are alphanumeric; anything else could smuggle descriptor syntax into
# scantxoutset's "addr(...)".
_ADDRESS = re.compile(r"^[0-9A-Za-z]{14,90}$")
_SEGWIT_UPPER = ("BC1", "TB1", "BCRT1", "LTC1", "TLTC1", "RLTC1")


def to_base_units(value: Any, *, what: str = "amount", party: str = "bitcoin") -> int:
    """Coins as the node writes them (a Decimal from the JSON) → integer base units, exactly.

    Refuses floats (they may already have lost the last digit), more than 8 decimals and non-numbers.
    """
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str)):
        raise PermanentError(f"{what} is not an exact number: {value!r}", party=party,
                             code=ErrorCode.BAD_RESPONSE)
    try:
        coins = Decimal(value)
    except InvalidOperation:
        raise PermanentError(f"{what} is not a number: {value!r}", party=party,
                             code=ErrorCode.BAD_RESPONSE) from None
    if not coins.is_finite():
        raise PermanentError(f"{what} is not finite: {value!r}", party=party, code=ErrorCode.BAD_RESPONSE)
    units = coins.scaleb(DECIMALS)
    if units != units.to_integral_value():
        raise PermanentError(f"{what} {value} has more than {DECIMALS} decimals", party=party,
                             code=ErrorCode.BAD_RESPONSE)
    return int(units)


def to_coins(amount: int) -> str:
    """Integer base units → the decimal string the RPC accepts for an amount ("0.12345678")."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError("amounts are integers in base units")
    return f"{Decimal(amount).scaleb(-DECIMALS):.{DECIMALS}f}"


class BitcoinRpc:
    """One Bitcoin Core JSON-RPC endpoint: ``call(method, *params)`` returns the result or raises.

    ``auth`` is ``(user, password)`` or the path of the node's ``.cookie`` file (re-read on every call,
    since the node writes a new cookie each time it starts). Credentials inside the URL are moved out of it.
    """

    def __init__(self, url: str, *, auth: tuple[str, str] | str | os.PathLike | None = None,
                 timeout: float | tuple[float, float] = (3.05, 30.0), party: str = "bitcoin",
                 session: requests.Session | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the RPC URL must be http(s)://host:port/")
        if parts.username is not None:
            if auth is None:
                auth = (parts.username, parts.password or "")
            netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
            parts = parts._replace(netloc=netloc)
        if auth is None:
            raise ValueError("RPC credentials are required: (user, password) or a cookie file path")
        self.url = urlunsplit(parts)
        self.party = party
        self.timeout = timeout
        self._auth = auth
        self._ids = itertools.count(1)
        self.session = session or requests.Session()
        # A retry here would hide from the caller that a call may have reached the node twice.
        self.session.mount("http://", HTTPAdapter(max_retries=0))
        self.session.mount("https://", HTTPAdapter(max_retries=0))

    def __repr__(self) -> str:  # never show credentials
        return f"{type(self).__name__}(url={self.url!r}, party={self.party!r})"

    def close(self) -> None:
        """Drop the kept-alive connection (a stopping node waits for open connections to close)."""
        self.session.close()

    def _credentials(self, method: str) -> tuple[str, str]:
        if isinstance(self._auth, tuple):
            return self._auth
        try:
            with open(self._auth, encoding="utf-8") as cookie:
                user, _, password = cookie.read().strip().partition(":")
        except FileNotFoundError:
            # The node writes the cookie when it starts and removes it when it stops.
            raise TransientError(f"{method}: the node's cookie file is missing (node not running?)",
                                 party=self.party, code=ErrorCode.CONNECTION) from None
        except OSError as exc:
            raise PermanentError(f"{method}: cannot read the node's cookie file ({exc.strerror})",
                                 party=self.party, code=ErrorCode.AUTH_FAILED) from None
        return user, password

    def call(self, method: str, *params: Any, timeout: float | tuple[float, float] | None = None) -> Any:
        request_id = next(self._ids)
        body = json.dumps({"jsonrpc": "1.0", "id": request_id, "method": method, "params": list(params)})
        try:
            response = self.session.post(
                self.url, data=body.encode(), auth=self._credentials(method),
                headers={"Content-Type": "application/json"}, timeout=timeout or self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise TransientError(f"{method}: no answer from the node in time", party=self.party,
                                 code=ErrorCode.TIMEOUT) from None
        except requests.RequestException as exc:
            raise TransientError(f"{method}: cannot reach the node ({type(exc).__name__})", party=self.party,
                                 code=ErrorCode.CONNECTION) from None
        return self._result(method, request_id, response)

    def _result(self, method: str, request_id: int, response: requests.Response) -> Any:
        status = response.status_code
        if status == 401:
            raise PermanentError(f"{method}: the node refused the RPC credentials", party=self.party,
                                 code=ErrorCode.AUTH_FAILED, http_status=status)
        if status == 403:
            raise PermanentError(f"{method}: the node does not allow RPC from this host (rpcallowip)",
                                 party=self.party, code=ErrorCode.PERMISSION_DENIED, http_status=status)
        try:
            # Amounts are JSON numbers: a float would round some of them.
            data = json.loads(response.text, parse_float=Decimal)
        except ValueError:
            data = None
        # Bitcoin Core answers an RPC error with HTTP 500 (404 for an unknown method) and a JSON-RPC body:
        # the body says more than the status.
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            raise self._rpc_error(method, data["error"], status)
        if status >= 500:
            raise TransientError(f"{method}: the node answered HTTP {status}", party=self.party,
                                 code=ErrorCode.SERVER_ERROR, http_status=status)
        if status != 200 or not isinstance(data, dict) or "result" not in data:
            raise PermanentError(f"{method}: the answer is not JSON-RPC (HTTP {status})", party=self.party,
                                 code=ErrorCode.BAD_RESPONSE, http_status=status)
        if data.get("id") != request_id:
            raise PermanentError(f"{method}: the answer is for another request", party=self.party,
                                 code=ErrorCode.BAD_RESPONSE, http_status=status)
        return data["result"]

    def _rpc_error(self, method: str, error: dict, status: int) -> PermanentError | TransientError:
        code = error.get("code")
        # Only the first line: an argument error carries the whole help text after it.
        message = str(error.get("message", "")).strip().splitlines()[0] if error.get("message") else "error"
        text = f"{method}: {message}"
        if code in _RPC_TRANSIENT:
            return TransientError(f"{text} ({_RPC_TRANSIENT[code]})", party=self.party,
                                  code=ErrorCode.SERVER_ERROR, venue_code=str(code), http_status=status)
        if message.startswith("Scan already in progress"):
            # scantxoutset runs one scan at a time per node; another caller's scan will end.
            return TransientError(text, party=self.party, code=ErrorCode.RATE_LIMITED, venue_code=str(code),
                                  http_status=status)
        if code == _RPC_INSUFFICIENT_FUNDS:
            kind = ErrorCode.INSUFFICIENT_BALANCE
        elif code in _RPC_VALIDATION:
            kind = ErrorCode.VALIDATION
        else:
            kind = ErrorCode.REJECTED
        return PermanentError(text, party=self.party, code=kind, venue_code=str(code), http_status=status)


def output_address(output: dict) -> str:
    """The address an output pays, or "" (OP_RETURN, bare multisig, MWEB). Bitcoin Core ≥ 22 writes
    ``address``; 0.21 (and Litecoin Core 0.21) a one-element ``addresses`` list."""
    script = output.get("scriptPubKey") or {}
    if script.get("address"):
        return script["address"]
    addresses = script.get("addresses") or []
    return addresses[0] if len(addresses) == 1 else ""


def _canonical(address: str) -> str:
    # The node writes bech32 in lowercase; an all-uppercase bech32 address is the same address.
    return address.lower() if address.startswith(_SEGWIT_UPPER) else address


class BitcoinRpcChain:
    """:class:`~counterparties.chains.base.ChainAdapter` for Bitcoin or Litecoin over a node's JSON-RPC.

    The node must run with ``-txindex=1`` (``transaction()`` and the fee and sender lookups read arbitrary
    transactions). ``balance()`` uses ``scantxoutset``, which walks the whole UTXO set: seconds on regtest,
    minutes on mainnet, one scan at a time per node — hence its own ``scan_timeout``. ``transfers_to()``
    reads every block above ``since_height``: pass the height already examined, not 0, on a real chain.
    There is no finality beyond counting confirmations, so ``TxStatus.finalized`` is always False.
    """

    def __init__(self, url: str, *, chain: str = "litecoin",
                 auth: tuple[str, str] | str | os.PathLike | None = None,
                 timeout: float | tuple[float, float] = (3.05, 30.0), scan_timeout: float = 600.0,
                 session: requests.Session | None = None) -> None:
        if chain not in CHAINS:
            raise ValueError(f"chain must be one of {CHAINS}, not {chain!r}")
        self.chain = chain
        self.scan_timeout = scan_timeout
        self.rpc = BitcoinRpc(url, auth=auth, timeout=timeout, party=chain, session=session)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.rpc.url!r}, chain={self.chain!r})"

    def close(self) -> None:
        self.rpc.close()

    # -- ChainAdapter --

    def tip_height(self) -> int:
        return int(self.rpc.call("getblockcount"))

    def balance(self, address: str, asset: AssetRef) -> Balance:
        self._check_asset(asset)
        address = self._check_address(address)
        # Timeouts as (connect, read): a scan may take minutes before the first byte comes back.
        result = self.rpc.call("scantxoutset", "start", [f"addr({address})"],
                               timeout=(3.05, self.scan_timeout))
        if not isinstance(result, dict) or not result.get("success"):
            raise TransientError("scantxoutset: the scan did not complete (aborted?)", party=self.chain,
                                 code=ErrorCode.SERVER_ERROR)
        return Balance(address=address, amount=self._units(result.get("total_amount"), "scantxoutset total"),
                       height=int(result["height"]))

    def transfers_to(self, address: str, asset: AssetRef, since_height: int = 0) -> list[ChainTransfer]:
        """Outputs paying `address` in blocks above `since_height`, then in the mempool (height None).

        One transfer per transaction (outputs to the same address in one transaction are added up); its
        `from_address` is the spending address when every input spends the same one, else "" — so the change
        a transaction sends back to its own address shows as from_address == to_address.
        """
        self._check_asset(asset)
        address = self._check_address(address)
        # The mempool first: a transaction mined meanwhile is then still found in its block.
        pending = list(self.rpc.call("getrawmempool", True))
        tip = self.tip_height()
        lookups: dict[str, dict] = {}
        found: dict[str, ChainTransfer] = {}
        for height in range(max(since_height, 0) + 1, tip + 1):
            block_hash = self.rpc.call("getblockhash", height)
            block = self.rpc.call("getblock", block_hash, 2)
            for tx in block["tx"]:
                transfer = self._transfer_to(tx, address, height, block_hash, lookups)
                if transfer is not None:
                    found[tx["txid"]] = transfer
        for txid in pending:
            if txid in found:
                continue
            tx = self._raw_transaction(txid)
            if tx is None or tx.get("blockhash"):  # left the mempool meanwhile; a block above has it
                continue
            transfer = self._transfer_to(tx, address, None, "", lookups)
            if transfer is not None:
                found[txid] = transfer
        return list(found.values())

    def transaction(self, txid: str, asset: AssetRef, seen_block_hash: str = "") -> TxStatus:
        self._check_asset(asset)
        if not isinstance(txid, str) or not _TXID.match(txid):
            raise PermanentError(f"getrawtransaction: {txid!r} is not a transaction id", party=self.chain,
                                 code=ErrorCode.VALIDATION)
        txid = txid.lower()
        seen_reorged = bool(seen_block_hash) and not self._on_main_chain(seen_block_hash)
        tx = self._raw_transaction(txid)
        if tx is None:
            if seen_reorged:
                return TxStatus(txid=txid, state=TxState.REORGED, block_hash=seen_block_hash)
            return TxStatus(txid=txid, state=TxState.UNKNOWN)
        lookups: dict[str, dict] = {}
        fee = self._fee(tx, lookups)
        block_hash = tx.get("blockhash") or ""
        header = self.rpc.call("getblockheader", block_hash) if block_hash else None
        if header is not None and int(header["confirmations"]) > 0:
            height = int(header["height"])
            transfers = self._transfers(tx, height, block_hash, lookups)
            return TxStatus(txid=txid, state=TxState.CONFIRMED, confirmations=int(header["confirmations"]),
                            height=height, block_hash=block_hash, fee=fee, transfers=transfers)
        transfers = self._transfers(tx, None, "", lookups)
        if header is not None:
            # The transaction index still points at a block that left the main chain, and the node has the
            # transaction in no main-chain block (the index would point there) and not in its mempool.
            return TxStatus(txid=txid, state=TxState.REORGED, block_hash=seen_block_hash or block_hash,
                            fee=fee, transfers=transfers)
        if seen_reorged:  # back in the mempool after its block was replaced: in no main-chain block
            return TxStatus(txid=txid, state=TxState.REORGED, block_hash=seen_block_hash, fee=fee,
                            transfers=transfers)
        return TxStatus(txid=txid, state=TxState.PENDING, fee=fee, transfers=transfers)

    # -- reading the node --

    def _check_asset(self, asset: AssetRef) -> None:
        if asset.chain != self.chain or asset.contract:
            raise PermanentError(f"{asset.symbol} on {asset.chain} is not the native coin of {self.chain}",
                                 party=self.chain, code=ErrorCode.VALIDATION)
        if asset.decimals != DECIMALS:
            raise PermanentError(f"{asset.symbol} has {DECIMALS} decimals on {self.chain}, not {asset.decimals}",
                                 party=self.chain, code=ErrorCode.VALIDATION)

    def _check_address(self, address: str) -> str:
        if not isinstance(address, str) or not _ADDRESS.match(address):
            raise PermanentError(f"{address!r} is not a {self.chain} address", party=self.chain,
                                 code=ErrorCode.VALIDATION)
        return _canonical(address)

    def _units(self, value: Any, what: str) -> int:
        return to_base_units(value, what=what, party=self.chain)

    def _on_main_chain(self, block_hash: str) -> bool:
        try:
            header = self.rpc.call("getblockheader", block_hash)
        except PermanentError as exc:
            if exc.venue_code == str(_RPC_NOT_FOUND):
                return False  # a block this node never saw is on none of its chains
            raise
        # Bitcoin Core reports -1 confirmations for a block off the main chain.
        return int(header["confirmations"]) > 0

    def _raw_transaction(self, txid: str) -> dict | None:
        try:
            return self.rpc.call("getrawtransaction", txid, True)
        except PermanentError as exc:
            if exc.venue_code == str(_RPC_NOT_FOUND):
                return None
            raise

    def _spent_outputs(self, tx: dict, lookups: dict[str, dict]) -> Iterable[dict]:
        for vin in tx["vin"]:
            if "coinbase" in vin or "txid" not in vin:
                continue
            previous = lookups.get(vin["txid"])
            if previous is None:
                previous = self._raw_transaction(vin["txid"])
                if previous is None:
                    raise PermanentError(f"getrawtransaction: input {vin['txid']} of {tx['txid']} not found "
                                         "(is the node running with -txindex=1?)", party=self.chain,
                                         code=ErrorCode.BAD_RESPONSE)
                lookups[vin["txid"]] = previous
            yield next(out for out in previous["vout"] if out["n"] == vin["vout"])

    def _fee(self, tx: dict, lookups: dict[str, dict]) -> int:
        if any("coinbase" in vin for vin in tx["vin"]):
            return 0
        spent = sum(self._units(out["value"], "input value") for out in self._spent_outputs(tx, lookups))
        paid = sum(self._units(out.get("value", 0), "output value") for out in tx["vout"])
        return spent - paid

    def _sender(self, tx: dict, lookups: dict[str, dict]) -> str:
        senders = {output_address(out) for out in self._spent_outputs(tx, lookups)}
        return senders.pop() if len(senders) == 1 else ""

    def _amounts_by_address(self, tx: dict) -> dict[str, int]:
        amounts: dict[str, int] = {}
        for out in tx["vout"]:
            address = output_address(out)
            if address:
                amounts[address] = amounts.get(address, 0) + self._units(out["value"], "output value")
        return amounts

    def _transfer_to(self, tx: dict, address: str, height: int | None, block_hash: str,
                     lookups: dict[str, dict]) -> ChainTransfer | None:
        amount = self._amounts_by_address(tx).get(address)
        if amount is None:
            return None
        return ChainTransfer(txid=tx["txid"], from_address=self._sender(tx, lookups), to_address=address,
                             amount=amount, height=height, block_hash=block_hash)

    def _transfers(self, tx: dict, height: int | None, block_hash: str,
                   lookups: dict[str, dict]) -> tuple[ChainTransfer, ...]:
        sender = self._sender(tx, lookups)
        return tuple(ChainTransfer(txid=tx["txid"], from_address=sender, to_address=address, amount=amount,
                                   height=height, block_hash=block_hash)
                     for address, amount in self._amounts_by_address(tx).items())
