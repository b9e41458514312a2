"""Load the reference and demo data. Safe to run again: it changes nothing that exists."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from accounts.services import requires_two_factor
from agencies.models import Membership, Organisation
from cases import demo, services
from cases.models import Asset, Case, DisposalPolicy, Jurisdiction


class Command(BaseCommand):
    help = "Create the demo organisations, users, assets, policy and a sample case (idempotent)."

    def handle(self, *args, **options):
        password = self._password()
        with transaction.atomic():
            created = self._seed(password)
        self.stdout.write(self.style.SUCCESS("Demo data ready" + (" (created)" if created else " (already there)")))
        self.stdout.write("Logins (password for all: %s):" % password)
        User = get_user_model()
        for username, (org, role, name) in demo.PERSONAS.items():
            two_factor = " + 2FA" if requires_two_factor(User.objects.get(username=username)) else ""
            self.stdout.write(f"  {username:<18} {role:<9} {org}{two_factor}")
        self.stdout.write("  admin              superuser (admin back office) + 2FA")
        self.stdout.write("2FA: at the first sign-in, scan the QR code with an authenticator app (or type its key,")
        self.stdout.write("e.g. into `oathtool --totp -b KEY`); keep the backup codes shown. A lost device:")
        self.stdout.write("  .venv/bin/python manage.py reset_two_factor USERNAME")

    def _password(self) -> str:
        """One demo password, from DEMO_PASSWORD or generated once and kept outside the repo."""
        if os.environ.get("DEMO_PASSWORD"):
            return os.environ["DEMO_PASSWORD"]
        path = Path(settings.VAR_DIR) / "demo-password"
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        password = "demo-" + secrets.token_urlsafe(9)
        path.write_text(password)
        path.chmod(0o600)
        return password

    def _seed(self, password: str) -> bool:
        User = get_user_model()
        jurisdiction, _ = Jurisdiction.objects.get_or_create(code="beijing", defaults={"name": "北京"})
        # The demo's whitelist cooling period is 0 hours (DEMO_WHITELIST_COOLING_HOURS) so that a demo can go
        # from bond to remittance in one sitting; a real policy keeps the model's default of 24 hours.
        DisposalPolicy.objects.get_or_create(jurisdiction=jurisdiction, is_current=True,
                                             defaults={"name": "北京模式 2025", "whitelist_cooling_hours":
                                                       int(os.environ.get("DEMO_WHITELIST_COOLING_HOURS", "0"))})
        orgs = {}
        for code, kind, name, name_en in demo.ORGANISATIONS:
            orgs[code], _ = Organisation.objects.get_or_create(
                code=code, defaults={"kind": kind, "name": name, "name_en": name_en, "jurisdiction": jurisdiction,
                                     "special_account_no": demo.SPECIAL_ACCOUNTS.get(code, ""),
                                     "offshore_account_no": demo.OFFSHORE_ACCOUNTS.get(code, "")})
        for symbol, name, chain, contract, decimals, fmt, confs, cap in demo.ASSETS:
            Asset.objects.get_or_create(symbol=symbol, chain=chain, defaults={
                "name": name, "token_contract": contract, "decimals": decimals, "address_format": fmt,
                "confirmations_required": confs, "supply_cap": cap * 10**decimals})
        users = {}
        for username, (org_code, role, display) in demo.PERSONAS.items():
            users[username] = self._user(User, username, password, display)
            Membership.objects.get_or_create(user=users[username], organisation=orgs[org_code], role=role)
        admin = self._user(User, "admin", password, "Administrator", superuser=True)
        Membership.objects.get_or_create(user=admin, organisation=orgs["cbex"], role="approver")

        if Case.objects.filter(bureau=orgs["shunyi-psb"], case_number="顺公(经)立字〔2025〕001号").exists():
            return False
        officer = users["shunyi_officer"]
        case = services.case_register(actor=officer, bureau=orgs["shunyi-psb"], case_number="顺公(经)立字〔2025〕001号",
                                      title="某网络传销案涉案虚拟货币", seized_at=timezone.now(),
                                      seizure_decision_no="顺公扣字〔2025〕017号", custodian="顺义分局涉案财物管理中心")
        services.case_record_legal_basis(actor=officer, case=case, kind="confiscation",
                                         document_no="顺公没字〔2025〕003号", basis_date=timezone.localdate(),
                                         authority="北京市公安局顺义分局")
        holdings = []
        for symbol, chain, amount, location in demo.SAMPLE_HOLDINGS:
            asset = Asset.objects.get(symbol=symbol, chain=chain)
            holdings.append(services.holding_register(
                actor=officer, case=case, asset=asset, address=demo.demo_address(asset.address_format, symbol + chain),
                amount=amount, location=location))
        entrustment = services.entrustment_create(actor=officer, case=case, holdings=holdings, bce=orgs["cbex"])
        # Signed off by the bureau's approver, so that BCE's people find work waiting.
        services.entrustment_submit(actor=users["shunyi_approver"], entrustment=entrustment)
        return True

    @staticmethod
    def _user(User, username, password, display, superuser=False):
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User(username=username, first_name=display, email=f"{username}@example.invalid",
                        is_staff=superuser, is_superuser=superuser)
            user.set_password(password)
            user.save()
        elif not user.check_password(password):
            # The password file was replaced (or DEMO_PASSWORD changed): keep the printed logins true.
            user.set_password(password)
            user.save(update_fields=["password"])
        return user
