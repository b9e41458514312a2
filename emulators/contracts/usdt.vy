# @version 0.3.9
"""
@title The emulated chain's "USDT": a plain ERC-20 with 6 decimals
@notice Only the deployer (the emulator) can mint: it stands in for Tether's issuer when a test funds a seizure
        address. A transfer above the sender's balance reverts, so a failed token transfer (EVM status 0) can
        be produced on demand.
"""

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256

name: public(String[32])
symbol: public(String[32])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
minter: public(address)


@external
def __init__():
    self.name = "Tether USD (emulated)"
    self.symbol = "USDT"
    self.decimals = 6
    self.minter = msg.sender


@external
def transfer(_to: address, _value: uint256) -> bool:
    assert self.balanceOf[msg.sender] >= _value, "transfer amount exceeds balance"
    self.balanceOf[msg.sender] -= _value
    self.balanceOf[_to] += _value
    log Transfer(msg.sender, _to, _value)
    return True


@external
def transferFrom(_from: address, _to: address, _value: uint256) -> bool:
    assert self.balanceOf[_from] >= _value, "transfer amount exceeds balance"
    assert self.allowance[_from][msg.sender] >= _value, "transfer amount exceeds allowance"
    self.balanceOf[_from] -= _value
    self.allowance[_from][msg.sender] -= _value
    self.balanceOf[_to] += _value
    log Transfer(_from, _to, _value)
    return True


@external
def approve(_spender: address, _value: uint256) -> bool:
    self.allowance[msg.sender][_spender] = _value
    log Approval(msg.sender, _spender, _value)
    return True


@external
def mint(_to: address, _value: uint256):
    assert msg.sender == self.minter, "only the minter mints"
    self.totalSupply += _value
    self.balanceOf[_to] += _value
    log Transfer(empty(address), _to, _value)
