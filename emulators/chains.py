"""What every chain emulator lets a test, the custody emulator or the demo do to its chain.

The portal never uses this: it reads chains only through ``counterparties.chains`` over the network.
These controls stand in for the world around the portal: coins appearing at a seizure address, a custody
system signing a transfer with a key it holds, blocks being produced, a re-organisation.

Each family's emulator (``emulators.litecoin``, ``emulators.evm``, ``emulators.tron``) returns a
controller implementing :class:`ChainControl` from its ``start_*`` function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from counterparties.chains.base import AssetRef


@dataclass(frozen=True)
class SentTx:
    txid: str
    amount: int  # base units of the asset that arrived (after the fee, when the fee was subtracted)
    fee: int  # network fee in the chain's native base units


@runtime_checkable
class ChainControl(Protocol):
    chain: str  # "litecoin" | "ethereum" | "tron"
    url: str  # what the portal's adapter is configured with (JSON-RPC or REST base URL, on 127.0.0.1)

    def assets(self) -> list[AssetRef]:
        """The assets this chain carries here (native coin first; tokens with their contract address)."""
        ...

    def new_address(self) -> str:
        """A fresh address whose key the emulator holds (so `send` can sign for it)."""
        ...

    def fund(self, address: str, asset: AssetRef, amount: int) -> str:
        """Make `amount` of `asset` arrive at `address` in a new block; for tokens, also enough of the native
        coin to pay fees. Returns the txid."""
        ...

    def send(self, from_address: str, to_address: str, asset: AssetRef, amount: int, *,
             subtract_fee: bool = False) -> SentTx:
        """Sign with the key of `from_address` and broadcast (not yet mined unless auto-mining)."""
        ...

    def mine(self, blocks: int = 1) -> int:
        """Produce blocks now; returns the new tip height."""
        ...

    def reorg(self, depth: int) -> None:
        """Replace the last `depth` blocks by a longer branch without their transactions, which are dropped
        (not re-broadcast): a transfer that looked confirmed disappears."""
        ...

    def set_block_time(self, seconds: float | None) -> None:
        """None: blocks only on `mine()` (tests). A number: a block every `seconds` in the background (demo)."""
        ...

    def stop(self) -> None: ...
