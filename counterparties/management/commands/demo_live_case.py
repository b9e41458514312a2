"""A demo case whose coins really sit on the emulated chains, for `make run` with the world of emulators.

The seized addresses are made by the custody emulator (funded on the Litecoin regtest node and the EVM node,
their keys handed to custody as the police would hand over a seized wallet). The entrustment is left
submitted: BCE accepts, appoints the agency and posts the bond in the portal, and the workers take it from
there, stopping for the approvals people must give (reserve, award, remittance).

Runs only when PORTAL_WORLD_CONTROL_URL is configured; idempotent.
"""

from __future__ import annotations

import requests
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone

from agencies.models import Organisation
from cases import services
from cases.models import Asset, Case
from portal.secrets import secret

CASE_NUMBER = "顺公(网)立字〔2026〕002号"
HOLDINGS = [("LTC", "litecoin", 250_000_000, "2.5"), ("ETH", "ethereum", 10 * 10**18, "10")]


class Command(BaseCommand):
    help = "Create the live demo case on the emulated chains (needs the world of emulators running)."

    def handle(self, *args, **options):
        url, token = secret("PORTAL_WORLD_CONTROL_URL"), secret("PORTAL_WORLD_CONTROL_TOKEN")
        if not url or not token:
            self.stdout.write("No world of emulators configured: no live demo case.")
            return
        bureau = Organisation.objects.get(code="shunyi-psb")
        if Case.objects.filter(bureau=bureau, case_number=CASE_NUMBER).exists():
            self.stdout.write(f"Live demo case {CASE_NUMBER} exists.")
            return
        User = get_user_model()
        officer, approver = User.objects.get(username="shunyi_officer"), User.objects.get(username="shunyi_approver")
        case = services.case_register(actor=officer, bureau=bureau, case_number=CASE_NUMBER,
                                      title="某网络赌博案涉案虚拟货币（链上演示）", seized_at=timezone.now(),
                                      seizure_decision_no="顺公扣字〔2026〕021号", custodian="顺义分局涉案财物管理中心")
        services.case_record_legal_basis(actor=officer, case=case, kind="confiscation", document_no="顺公没字〔2026〕009号",
                                         basis_date=timezone.localdate(), authority="北京市公安局顺义分局")
        holdings = []
        for symbol, chain, base_units, amount in HOLDINGS:
            answer = requests.post(f"{url}/seize", json={"chain": chain, "asset": symbol, "amount": base_units},
                                   headers={"Authorization": f"Bearer {token}"}, timeout=60)
            answer.raise_for_status()
            holdings.append(services.holding_register(
                actor=officer, case=case, asset=Asset.objects.get(symbol=symbol, chain=chain),
                address=answer.json()["address"], amount=amount, location="扣押冷钱包（已移交托管）"))
        entrustment = services.entrustment_create(actor=officer, case=case, holdings=holdings,
                                                  bce=Organisation.objects.get(code="cbex"))
        services.entrustment_submit(actor=approver, entrustment=entrustment)
        self.stdout.write(f"Live demo case {CASE_NUMBER}: entrustment {entrustment.number}, coins on the emulated "
                          "chains; accept, appoint and bond it in the portal and the workers take over.")
