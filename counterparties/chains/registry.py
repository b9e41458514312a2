"""Which node answers for which chain: configured from the environment or the secrets file.

``PORTAL_CHAIN_<CHAIN>_URL`` (CHAIN is LITECOIN, BITCOIN, ETHEREUM or TRON) names the node; credentials are
``PORTAL_CHAIN_<CHAIN>_USER``/``_PASSWORD`` (Bitcoin Core RPC) and ``PORTAL_CHAIN_TRON_API_KEY`` (TronGrid).
A chain without a URL is not watched: its detection stays manual and the workers say so.
"""

from __future__ import annotations

from counterparties.chains.base import AssetRef, ChainAdapter
from portal.secrets import secret

BITCOIN_FAMILY = ("bitcoin", "litecoin")


def asset_ref(asset) -> AssetRef:
    """The adapter's view of a portal Asset."""
    return AssetRef(symbol=asset.symbol, chain=asset.chain, decimals=asset.decimals,
                    contract=asset.token_contract or "")


def _setting(chain: str, name: str) -> str | None:
    return secret(f"PORTAL_CHAIN_{chain.upper()}_{name}")


def chain_for(chain: str) -> ChainAdapter | None:
    """The adapter for `chain` (an Asset.chain value), or None when no node is configured for it."""
    url = _setting(chain, "URL")
    if not url:
        return None
    if chain in BITCOIN_FAMILY:
        from counterparties.chains.bitcoin import BitcoinRpcChain

        return BitcoinRpcChain(url, chain=chain, auth=(_setting(chain, "USER") or "", _setting(chain, "PASSWORD") or ""))
    if chain == "ethereum":
        from counterparties.chains.evm import EvmChain

        return EvmChain(url, chain=chain)
    if chain == "tron":
        from counterparties.chains.tron import TronGridChain

        return TronGridChain(url, api_key=_setting(chain, "API_KEY"))
    return None


def chain_for_asset(asset) -> ChainAdapter | None:
    return chain_for(asset.chain)
