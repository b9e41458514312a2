"""Reference data and demo data shared by the `seed_demo` command and the tests' personas."""

from decimal import Decimal

from agencies.models import OrgKind

from .addresses import demo_address  # noqa: F401 - the demo data and tests take addresses from here

# (code, kind, Chinese name, English name)
ORGANISATIONS = [
    ("bj-legal-corps", OrgKind.LEGAL_CORPS, "北京市公安局法制总队", "Legal Affairs Corps, Beijing PSB"),
    ("shunyi-psb", OrgKind.BUREAU, "北京市公安局顺义分局", "Shunyi Branch, Beijing PSB"),
    ("chaoyang-psb", OrgKind.BUREAU, "北京市公安局朝阳分局", "Chaoyang Branch, Beijing PSB"),
    ("cbex", OrgKind.BCE, "北京产权交易所", "Beijing Equity Exchange (CBEX)"),
    ("agency-a", OrgKind.AGENCY, "甲数字资产处置服务有限公司", "Agency A Digital Asset Disposal Services Ltd"),
    ("agency-b", OrgKind.AGENCY, "乙数字资产处置服务有限公司", "Agency B Digital Asset Disposal Services Ltd"),
    ("mps-first-institute", OrgKind.WITNESS, "公安部第一研究所", "First Research Institute of the MPS"),
    ("osl", OrgKind.PLATFORM, "OSL", "OSL Digital Securities"),
    ("hashkey", OrgKind.PLATFORM, "HashKey Exchange", "HashKey Exchange"),
    ("hkvax", OrgKind.PLATFORM, "HKVAX", "HKVAX"),
    ("hkbitex", OrgKind.PLATFORM, "HKbitEX", "HKbitEX"),
    ("accumulus", OrgKind.PLATFORM, "Accumulus", "Accumulus"),
    ("dfx-labs", OrgKind.PLATFORM, "DFX Labs", "DFX Labs"),
    ("ex-io", OrgKind.PLATFORM, "EX.IO", "EX.IO"),
    ("hk-bank", OrgKind.BANK, "香港某银行", "Hong Kong receiving bank"),
    ("bj-bank", OrgKind.BANK, "北京某银行", "Beijing settlement bank"),
    ("bj-finance", OrgKind.FINANCE, "北京市财政局", "Beijing Municipal Finance Bureau"),
    ("bj-inspection", OrgKind.SUPERVISOR, "北京市公安局警务督察总队", "Police Inspection Corps, Beijing PSB"),
]

SPECIAL_ACCOUNTS = {"shunyi-psb": "110100000000000001", "chaoyang-psb": "110100000000000002"}
# Each agency's same-name offshore USD account at the Hong Kong bank; agency-a's is the account the emulated
# world (emulators/world.py) opens by default, so the demo's sale proceeds land where the portal looks.
OFFSHORE_ACCOUNTS = {"agency-a": "HK-012-345678-838", "agency-b": "HK-012-345678-839"}

# (symbol, name, chain, contract, decimals, address format, confirmations, supply cap in whole units)
ASSETS = [
    ("BTC", "Bitcoin", "bitcoin", "", 8, "btc", 6, 21_000_000),
    ("LTC", "Litecoin", "litecoin", "", 8, "ltc", 12, 84_000_000),
    ("ETH", "Ether", "ethereum", "", 18, "evm", 64, 130_000_000),
    ("USDT", "Tether USD (ERC-20)", "ethereum", "0xdAC17F958D2ee523a2206206994597C13D831ec7", 6, "evm", 64,
     200_000_000_000),
    ("USDT", "Tether USD (TRC-20)", "tron", "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", 6, "tron", 20,
     200_000_000_000),
]

# username → (organisation code, role, display name)
PERSONAS = {
    "shunyi_officer": ("shunyi-psb", "officer", "顺义 经办民警"),
    "shunyi_approver": ("shunyi-psb", "approver", "顺义 审批领导"),
    "chaoyang_officer": ("chaoyang-psb", "officer", "朝阳 经办民警"),
    "corps_auditor": ("bj-legal-corps", "auditor", "法制总队 监督"),
    "bce_officer": ("cbex", "officer", "北交所 经办"),
    "bce_approver": ("cbex", "approver", "北交所 审批"),
    "agency_officer": ("agency-a", "officer", "甲机构 操作员"),
    "agency_approver": ("agency-a", "approver", "甲机构 负责人"),
    "agencyb_officer": ("agency-b", "officer", "乙机构 操作员"),
    "witness_officer": ("mps-first-institute", "officer", "一所 技术见证"),
    "supervisor": ("bj-inspection", "auditor", "督察 审计"),
}


SAMPLE_HOLDINGS = [  # (symbol, chain, amount as text, location)
    ("BTC", "bitcoin", "12.34567890", "扣押硬件钱包 HW-001"),
    ("ETH", "ethereum", "150.5", "扣押硬件钱包 HW-002"),
    ("USDT", "tron", "250000", "扣押助记词 M-003"),
]
SAMPLE_VALUATION_CNY = Decimal("12000000.00")
