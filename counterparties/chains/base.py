"""The interface every chain adapter implements, and the answers it gives.

Amounts are integers in the asset's base units (satoshi, litoshi, wei, the token's smallest unit); a node's
decimal answer is converted at the edge and refused if it does not fit. Errors are
:class:`counterparties.errors.TransientError` (node down, timeout, rate limited: ask again later) or
:class:`counterparties.errors.PermanentError` (malformed answer, unknown asset, an address the chain cannot
hold); the adapters never return a guess.

"Not found" and "re-organised away" are answers, not errors: :class:`TxState` says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class AssetRef:
    """Which coin on which chain: what an adapter needs to know of the portal's Asset."""

    symbol: str  # "BTC", "LTC", "ETH", "USDT"
    chain: str  # "bitcoin", "litecoin", "ethereum", "tron"
    decimals: int
    contract: str = ""  # token contract address; empty for the chain's native coin


@dataclass(frozen=True)
class Balance:
    address: str
    amount: int  # base units
    height: int  # the block height the balance was read at


@dataclass(frozen=True)
class ChainTransfer:
    """One movement of the asset into or out of an address, as the chain records it."""

    txid: str
    from_address: str  # "" when the chain does not say (a Bitcoin input may spend several addresses)
    to_address: str
    amount: int  # base units
    height: int | None  # None while unconfirmed
    block_hash: str = ""


class TxState(StrEnum):
    UNKNOWN = "unknown"  # the node has never heard of it (or dropped it from the mempool)
    PENDING = "pending"  # in the mempool, in no block yet
    CONFIRMED = "confirmed"  # in a block of the main chain; see `confirmations`
    REORGED = "reorged"  # was in block `seen_block_hash`, which is no longer on the main chain,
    #                      and the transaction is in no other main-chain block
    FAILED = "failed"  # mined but reverted (EVM status 0, TRON contractRet != SUCCESS)


@dataclass(frozen=True)
class TxStatus:
    txid: str
    state: TxState
    confirmations: int = 0
    height: int | None = None
    block_hash: str = ""
    # Finality beyond counting blocks, where the chain has it (Ethereum's `finalized` tag, TRON's solidified
    # block): True once the block is at or below the finalized one.
    finalized: bool = False
    fee: int = 0  # network fee paid, in the chain's native base units (0 when unknown)
    transfers: tuple[ChainTransfer, ...] = ()  # the asset movements this transaction made


@runtime_checkable
class ChainAdapter(Protocol):
    """Read-only access to one chain, for the assets that live on it."""

    chain: str

    def tip_height(self) -> int: ...

    def balance(self, address: str, asset: AssetRef) -> Balance: ...

    def transfers_to(self, address: str, asset: AssetRef, since_height: int = 0) -> list[ChainTransfer]:
        """Every movement of `asset` into `address` in blocks above `since_height` (and the mempool)."""
        ...

    def transaction(self, txid: str, asset: AssetRef, seen_block_hash: str = "") -> TxStatus:
        """Where the transaction stands. Pass the block hash it was last seen in, to detect a re-org."""
        ...
