"""Chain adapters: what the portal reads from a blockchain (it never signs: custody does that).

``base`` holds the interface and the value types; one module per family implements it over the real
protocol: ``bitcoin`` (Bitcoin Core JSON-RPC, for BTC and LTC), ``evm`` (Ethereum JSON-RPC via web3.py,
for ETH and ERC-20 tokens), ``tron`` (TronGrid REST, for TRC-20 tokens). ``registry.chain_for(asset)``
gives the configured adapter for an asset of the portal.
"""
