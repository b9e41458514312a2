"""TRON through TronGrid's REST API (or any java-tron HTTP node with TronGrid's v1 index): TRX and TRC-20 tokens.

* ``balance``: ``GET /v1/accounts/{address}`` (``balance`` in sun; ``trc20`` entries ``{contract: "amount"}``).
  TronGrid names no block for it, so the height reported is the tip read just before.
* ``transfers_to``: ``GET /v1/accounts/{address}/transactions/trc20`` (tokens) or ``.../transactions`` (TRX),
  ``only_to=true``, from the timestamp of the block at ``since_height``, all pages (``fingerprint``). The trc20
  list gives no block number, so each transfer's height comes from ``gettransactioninfobyid``.
* ``transaction``: ``/wallet/gettransactionbyid`` (known at all? the contract called) and
  ``/wallet/gettransactioninfobyid`` (block, fee in sun, receipt result, logs). ``contractRet`` other than
  SUCCESS is FAILED; confirmations count from the tip (``/wallet/getnowblock``); ``finalized`` once the block
  is at or below the solidified one (``/walletsolidity/getnowblock``).

Errors: connection, timeout, 429 and 5xx are :class:`TransientError`; 401/403 (a wrong ``TRON-PRO-API-KEY``),
other 4xx, malformed answers and bad addresses are :class:`PermanentError`.
"""

from __future__ import annotations

import re
from typing import Any

import requests
from bip_utils import Base58Encoder, TrxAddrDecoder

from counterparties.chains.base import AssetRef, Balance, ChainTransfer, TxState, TxStatus
from counterparties.errors import ErrorCode, PermanentError, TransientError

PARTY = "tron"
TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
TXID = re.compile(r"[0-9a-fA-F]{64}")
PAGE_SIZE = 200
MAX_PAGES = 100  # 20,000 transfers per call; more means the caller should ask from a later height


class TronGridChain:
    """A :class:`~counterparties.chains.base.ChainAdapter` for TRON over TronGrid."""

    chain = "tron"

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        if api_key:
            self._session.headers["TRON-PRO-API-KEY"] = api_key

    def __repr__(self) -> str:
        return "TronGridChain()"  # never the API key

    # -- ChainAdapter ----------------------------------------------------------------------------------------

    def tip_height(self) -> int:
        return self._number(self._post("/wallet/getnowblock", {}))

    def balance(self, address: str, asset: AssetRef) -> Balance:
        self._address(address)
        contract = self._contract(asset)
        height = self.tip_height()
        data = self._get(f"/v1/accounts/{address}", {}).get("data")
        if not isinstance(data, list):
            raise self._bad("account answer without a data list")
        if not data:
            return Balance(address=address, amount=0, height=height)  # never activated: holds nothing
        account = data[0]
        if contract is None:
            return Balance(address=address, amount=self._int(account.get("balance", 0), "balance"), height=height)
        amount = 0
        for entry in account.get("trc20") or []:
            if isinstance(entry, dict) and contract in entry:
                amount = self._int(entry[contract], "trc20 balance")
        return Balance(address=address, amount=amount, height=height)

    def transfers_to(self, address: str, asset: AssetRef, since_height: int = 0) -> list[ChainTransfer]:
        self._address(address)
        contract = self._contract(asset)
        params: dict[str, Any] = {"only_to": "true", "limit": PAGE_SIZE}
        if since_height > 0:
            block = self._post("/wallet/getblockbynum", {"num": since_height})
            if not block:
                return []  # the chain is not that high (yet)
            # Block timestamps strictly increase, so "above since_height" is "after its timestamp".
            params["min_timestamp"] = self._timestamp(block) + 1
        if contract is not None:
            params["contract_address"] = contract
        path = f"/v1/accounts/{address}/transactions" + ("/trc20" if contract else "")
        transfers = []
        for item in self._pages(path, params):
            transfer = self._token_item(item, address, contract) if contract else self._trx_item(item, address)
            if transfer is not None and (transfer.height is None or transfer.height > since_height):
                transfers.append(transfer)
        return sorted(transfers, key=lambda t: (t.height is None, t.height or 0))

    def transaction(self, txid: str, asset: AssetRef, seen_block_hash: str = "") -> TxStatus:
        if not isinstance(txid, str) or not TXID.fullmatch(txid):
            raise PermanentError(f"not a TRON transaction id: {txid!r}", party=PARTY, code=ErrorCode.VALIDATION)
        txid = txid.lower()
        contract = self._contract(asset)
        tx = self._post("/wallet/gettransactionbyid", {"value": txid})
        if not tx:
            if seen_block_hash and not self._post("/wallet/getblockbyid", {"value": seen_block_hash}):
                return TxStatus(txid=txid, state=TxState.REORGED)
            return TxStatus(txid=txid, state=TxState.UNKNOWN)
        info = self._post("/wallet/gettransactioninfobyid", {"value": txid})
        if "blockNumber" not in info:
            return TxStatus(txid=txid, state=TxState.PENDING)
        height = self._int(info["blockNumber"], "blockNumber")
        block = self._post("/wallet/getblockbynum", {"num": height})
        tip, solid = self.tip_height(), self._number(self._post("/walletsolidity/getnowblock", {}))
        try:
            contract_ret = (tx.get("ret") or [{}])[0].get("contractRet", "SUCCESS")
            receipt_result = (info.get("receipt") or {}).get("result", "SUCCESS")
        except (AttributeError, IndexError, TypeError):
            raise self._bad(f"transaction {txid} has a malformed result") from None
        succeeded = contract_ret == "SUCCESS" and receipt_result == "SUCCESS" and info.get("result") != "FAILED"
        block_id = block.get("blockID", "") if isinstance(block, dict) else ""
        transfers: tuple[ChainTransfer, ...] = ()
        if succeeded:
            transfers = self._tx_transfers(txid, tx, info, contract, height, block_id)
        return TxStatus(
            txid=txid,
            state=TxState.CONFIRMED if succeeded else TxState.FAILED,
            confirmations=max(0, tip - height + 1),
            height=height,
            block_hash=block_id,
            finalized=height <= solid,
            fee=self._int(info.get("fee", 0), "fee"),
            transfers=transfers,
        )

    # -- decoding --------------------------------------------------------------------------------------------

    def _tx_transfers(self, txid: str, tx: dict, info: dict, contract: str | None, height: int,
                      block_id: str) -> tuple[ChainTransfer, ...]:
        try:
            if contract is None:
                call = tx["raw_data"]["contract"][0]
                if call["type"] != "TransferContract":
                    return ()
                value = call["parameter"]["value"]
                return (ChainTransfer(txid=txid, from_address=_base58(value["owner_address"]),
                                      to_address=_base58(value["to_address"]),
                                      amount=self._int(value["amount"], "amount"), height=height,
                                      block_hash=block_id),)
            contract_hex = _hex41(contract)[2:]
            transfers = []
            for log in info.get("log") or []:
                topics = log["topics"]
                if log["address"].lower() != contract_hex or len(topics) != 3 or topics[0].lower() != TRANSFER_TOPIC:
                    continue
                transfers.append(ChainTransfer(txid=txid, from_address=_base58("41" + topics[1][-40:]),
                                               to_address=_base58("41" + topics[2][-40:]),
                                               amount=int(log["data"], 16), height=height, block_hash=block_id))
            return tuple(transfers)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise self._bad(f"transaction {txid} cannot be decoded ({exc})") from None

    def _token_item(self, item: dict, address: str, contract: str) -> ChainTransfer | None:
        try:
            if item.get("type") != "Transfer" or item["to"] != address or item["token_info"]["address"] != contract:
                return None
            txid = item["transaction_id"]
            amount = int(item["value"])
        except (KeyError, TypeError, ValueError) as exc:
            raise self._bad(f"a TRC-20 transfer item cannot be read ({exc})") from None
        info = self._post("/wallet/gettransactioninfobyid", {"value": txid})
        height = self._int(info["blockNumber"], "blockNumber") if "blockNumber" in info else None
        block_id = ""
        if height is not None:
            block_id = self._post("/wallet/getblockbynum", {"num": height}).get("blockID", "")
        return ChainTransfer(txid=txid, from_address=item.get("from", ""), to_address=address, amount=amount,
                             height=height, block_hash=block_id)

    def _trx_item(self, item: dict, address: str) -> ChainTransfer | None:
        try:
            call = item["raw_data"]["contract"][0]
            if call["type"] != "TransferContract" or (item.get("ret") or [{}])[0].get("contractRet") != "SUCCESS":
                return None
            value = call["parameter"]["value"]
            if _base58(value["to_address"]) != address:
                return None
            height = item.get("blockNumber")
            block_id = ""
            if height is not None:
                block_id = self._post("/wallet/getblockbynum", {"num": height}).get("blockID", "")
            return ChainTransfer(txid=item["txID"], from_address=_base58(value["owner_address"]), to_address=address,
                                 amount=self._int(value["amount"], "amount"),
                                 height=None if height is None else self._int(height, "blockNumber"),
                                 block_hash=block_id)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise self._bad(f"a TRX transfer item cannot be read ({exc})") from None

    # -- HTTP ------------------------------------------------------------------------------------------------

    def _pages(self, path: str, params: dict):
        for _ in range(MAX_PAGES):
            answer = self._get(path, params)
            data = answer.get("data")
            if not isinstance(data, list):
                raise self._bad(f"{path} answered without a data list")
            yield from data
            fingerprint = (answer.get("meta") or {}).get("fingerprint")
            if not fingerprint:
                return
            params = {**params, "fingerprint": fingerprint}
        raise PermanentError(f"more than {MAX_PAGES * PAGE_SIZE} transfers: ask from a later height", party=PARTY,
                             code=ErrorCode.LIMIT_EXCEEDED)

    def _get(self, path: str, params: dict) -> dict:
        return self._request("GET", path, params=params)

    def _post(self, path: str, body: dict) -> dict:
        return self._request("POST", path, json=body)

    def _request(self, method: str, path: str, **kwargs) -> dict:
        try:
            response = self._session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        except requests.Timeout:
            raise TransientError(f"{path}: TronGrid did not answer in time", party=PARTY,
                                 code=ErrorCode.TIMEOUT) from None
        except requests.ConnectionError as exc:
            raise TransientError(f"{path}: cannot reach TronGrid ({type(exc).__name__})", party=PARTY,
                                 code=ErrorCode.CONNECTION) from None
        status = response.status_code
        if status == 429:
            raise TransientError(f"{path}: TronGrid is rate limiting us", party=PARTY, code=ErrorCode.RATE_LIMITED,
                                 http_status=status, retry_after=_retry_after(response))
        if status >= 500:
            raise TransientError(f"{path}: TronGrid answered HTTP {status}", party=PARTY,
                                 code=ErrorCode.SERVER_ERROR, http_status=status)
        if status in (401, 403):
            raise PermanentError(f"{path}: TronGrid refused the API key (HTTP {status})", party=PARTY,
                                 code=ErrorCode.AUTH_FAILED, http_status=status)
        if status != 200:
            raise PermanentError(f"{path}: TronGrid refused the request with HTTP {status}", party=PARTY,
                                 code=ErrorCode.REJECTED, http_status=status)
        try:
            answer = response.json()
        except ValueError:
            raise self._bad(f"{path} answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise self._bad(f"{path} answered {type(answer).__name__}, not an object")
        return answer

    # -- checking --------------------------------------------------------------------------------------------

    def _address(self, address: str) -> None:
        if not isinstance(address, str) or not address.startswith("T"):
            raise PermanentError(f"not a TRON address: {address!r}", party=PARTY, code=ErrorCode.VALIDATION)
        try:
            TrxAddrDecoder.DecodeAddr(address)
        except ValueError:
            raise PermanentError(f"the TRON address {address} has a wrong checksum (mistyped?)", party=PARTY,
                                 code=ErrorCode.VALIDATION) from None

    def _contract(self, asset: AssetRef) -> str | None:
        if asset.chain != self.chain:
            raise PermanentError(f"{asset.symbol} lives on {asset.chain}, not tron", party=PARTY,
                                 code=ErrorCode.VALIDATION)
        if asset.contract:
            self._address(asset.contract)
            return asset.contract
        return None

    def _bad(self, message: str) -> PermanentError:
        return PermanentError(f"malformed TronGrid answer: {message}", party=PARTY, code=ErrorCode.BAD_RESPONSE)

    def _int(self, value: Any, what: str) -> int:
        if isinstance(value, str) and value.isdigit():
            return int(value)  # TRC-20 amounts come as decimal strings (they exceed JavaScript's integers)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(f"{what} is {value!r}, not an integer")
        return value

    def _number(self, block: dict) -> int:
        try:
            return self._int(block["block_header"]["raw_data"]["number"], "block number")
        except (KeyError, TypeError):
            raise self._bad("a block without block_header.raw_data.number") from None

    def _timestamp(self, block: dict) -> int:
        try:
            return self._int(block["block_header"]["raw_data"]["timestamp"], "block timestamp")
        except (KeyError, TypeError):
            raise self._bad("a block without block_header.raw_data.timestamp") from None


def _hex41(address: str) -> str:
    return "41" + TrxAddrDecoder.DecodeAddr(address).hex()


def _base58(hex41: str) -> str:
    return Base58Encoder.CheckEncode(bytes.fromhex(hex41))


def _retry_after(response: requests.Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
