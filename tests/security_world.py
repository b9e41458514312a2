"""A world for the authorisation matrix: every organisation with an officer, an approver and an auditor,
two bureaus' entrustments in several states, with documents, evidence and a return to victims.

Personas are named by a short key, `<org>_<role>`:

    A  Shunyi bureau (bureau A)            B  Chaoyang bureau (bureau B)
    C  CBEX                                G  agency A, appointed to bureau A's entrustments
    N  agency B, appointed to nothing      P  OSL, the platform of bureau A's entrustments
    K  a Hong Kong bank                    F  the finance bureau
    S  the supervisors (督察)               L  the Legal Affairs Corps

plus `anon` (no session), `admin` (a staff superuser with no membership), `ex` (a Shunyi officer whose
membership was ended) and `disabled` (a Shunyi officer whose account was switched off).
"""

from __future__ import annotations

import hashlib
import uuid
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from agencies.models import Membership, OrgKind, Role
from cases import services
from cases.demo import demo_address
from cases.models import Event, Lot, Notification
from documents.models import Document, DocumentType
from settlements import services as money

from .factories import BASIS_DATE, SEIZED_AT, OrganisationFactory, UserFactory, World, member
from .flow import Flow

ROLES = {"off": Role.OFFICER, "app": Role.APPROVER, "aud": Role.AUDITOR}
ORGS = "ABCGNPKFSL"

# The World's own personas, reused under their matrix keys.
WORLD_PERSONAS = {"A_off": "shunyi_officer", "A_app": "shunyi_approver", "B_off": "chaoyang_officer",
                  "B_app": "chaoyang_approver", "C_off": "bce_officer", "C_app": "bce_approver",
                  "G_off": "agency_officer", "N_off": "agency_b_officer", "S_aud": "supervisor"}

PDF = b"%PDF-1.7 evidence for the matrix"


def team(*orgs: str) -> frozenset[str]:
    """Everyone (officer, approver, auditor) of the named organisations."""
    return frozenset(f"{o}_{r}" for o in orgs for r in ROLES)


MEMBERS = team(*ORGS)
PERSONAS = ["anon", *sorted(MEMBERS), "admin", "ex", "disabled"]


class SecurityWorld:
    def __init__(self):
        w = self.w = World()
        org = OrganisationFactory
        self.orgs = {"A": w.shunyi, "B": w.chaoyang, "C": w.bce, "G": w.agency, "N": w.agency_b, "P": w.osl,
                     "K": w.hk_bank, "S": w.inspection,
                     "F": org(code="finance", kind=OrgKind.FINANCE, name="北京市财政局"),
                     "L": org(code="legal-corps", kind=OrgKind.LEGAL_CORPS, name="北京市公安局法制总队")}
        self.users = {"anon": None}
        for key in sorted(MEMBERS):
            o, r = key.split("_")
            name = WORLD_PERSONAS.get(key, f"m_{self.orgs[o].code}_{r}")
            self.users[key] = member(name, self.orgs[o], ROLES[r])
        self.users["admin"] = UserFactory(username="root", is_staff=True, is_superuser=True)
        self.users["ex"] = member("former_shunyi_officer", w.shunyi, Role.OFFICER)
        Membership.objects.filter(user=self.users["ex"]).update(is_active=False)
        self.users["disabled"] = member("disabled_shunyi_officer", w.shunyi, Role.OFFICER)
        get_user_model().objects.filter(pk=self.users["disabled"].pk).update(is_active=False)
        self.users["disabled"].refresh_from_db()

        with transaction.atomic():
            self.entrustments = {
                "A_draft": Flow(w, holdings=(("BTC", "1.5"),), case_number="顺公立字〔2025〕701号").to("draft"),
                "A_selling": Flow(w, case_number="顺公立字〔2025〕702号").to("selling"),
                "A_credited": Flow(w, holdings=(("BTC", "0.5"),), case_number="顺公立字〔2025〕703号").to("credited"),
                "B_submitted": self._chaoyang_submitted("朝公立字〔2025〕704号"),
            }
            credited = self.entrustments["A_credited"]
            self.victim_return = money.victim_return_prepare(
                actor=w.shunyi_officer, entrustment=credited, recipient="受害人甲", recipient_account="6222000000001",
                amount_cny=Decimal("100.00"), basis="判决书第三项")
        self.cases = {key: e.case for key, e in self.entrustments.items()}
        selling = self.entrustments["A_selling"]
        lots = list(Lot.objects.filter(entrustment=selling).order_by("sequence"))
        self.lots = {"A_selling_inquiry": lots[0], "A_selling_reserved": lots[1],
                     "A_credited_executed": Lot.objects.filter(entrustment=credited).first()}
        assert [lot.state for lot in lots] == ["inquiry", "reserve_set"]

        officer_of = {"A": w.shunyi_officer, "B": w.chaoyang_officer}
        self.evidence = {
            "A_draft_case": services.evidence_add(actor=w.shunyi_officer, case=self.cases["A_draft"], kind="seizure",
                                                  upload=SimpleUploadedFile("a-case.pdf", PDF)),
            "A_selling_entrustment": services.evidence_add(
                actor=w.shunyi_officer, case=self.cases["A_selling"], kind="basis", entrustment=selling,
                upload=SimpleUploadedFile("a-ent.pdf", PDF)),
            "B_submitted_entrustment": services.evidence_add(
                actor=officer_of["B"], case=self.cases["B_submitted"], kind="basis",
                entrustment=self.entrustments["B_submitted"], upload=SimpleUploadedFile("b-ent.pdf", PDF)),
        }
        self.documents = {key: self._document(self.entrustments[key], issuer)
                          for key, issuer in (("A_selling", w.bce), ("B_submitted", w.bce), ("A_draft", w.shunyi))}
        # A notification for Shunyi's officer, about an event of its own entrustment.
        event = Event.objects.filter(entrustment=selling).order_by("id").first()
        self.notification = Notification.objects.create(event=event, user=w.shunyi_officer)

    def _chaoyang_submitted(self, number):
        w = self.w
        case = services.case_register(actor=w.chaoyang_officer, bureau=w.chaoyang, case_number=number,
                                      title="电信诈骗案", seized_at=SEIZED_AT, seizure_decision_no=f"{number}-扣",
                                      custodian="财物中心")
        services.case_record_legal_basis(actor=w.chaoyang_officer, case=case, kind="judgment",
                                         document_no=f"{number}-判", basis_date=BASIS_DATE, authority="人民法院")
        holding = services.holding_register(actor=w.chaoyang_officer, case=case, asset=w.btc,
                                            address=demo_address("btc", number), amount="0.7", location="钱包")
        entrustment = services.entrustment_create(actor=w.chaoyang_officer, case=case, holdings=[holding], bce=w.bce)
        return services.entrustment_submit(actor=w.chaoyang_approver, entrustment=entrustment)

    @staticmethod
    def _document(entrustment, issuer):
        data = b"%PDF-1.7 " + entrustment.number.encode()
        doc = Document(type=DocumentType.DETECTION_REPORT, number=f"JC-2026-{entrustment.pk:06d}", year=2026,
                       entrustment=entrustment, issuer=issuer, sha256=hashlib.sha256(data).hexdigest(),
                       size=len(data), printed_facts={"检测对象 Subject": "BTC"}, signed=False,
                       trigger=f"matrix:{uuid.uuid4()}")
        doc.file.save("matrix.pdf", ContentFile(data), save=False)
        doc.save()
        return doc

    def secrets(self, key: str) -> tuple[str, str]:
        """What a page about entrustment `key` would give away: its number and its case number."""
        e = self.entrustments[key]
        return e.number, self.cases[key].case_number
