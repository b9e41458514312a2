"""Every step that produces a document produces it: numbered, signed, verifiable, listed."""

import pytest
from django.core.management import call_command
from django.urls import reverse

from cases.models import Event, EventType, Lot
from documents.models import Document, DocumentType
from documents.services import document_regenerate
from documents.signing import validate_pdf
from tests.factories import sign_in
from tests.flow import STEPS

pytestmark = pytest.mark.documents

EXPECTED = {
    DocumentType.ENTRUSTMENT_LETTER, DocumentType.AGREEMENT, DocumentType.APPOINTMENT,
    DocumentType.BOND_CERTIFICATE, DocumentType.DETECTION_REPORT, DocumentType.HANDOVER_RECORD,
    DocumentType.RESERVE_DETERMINATION, DocumentType.INQUIRY_RECORD, DocumentType.SALE_CONFIRMATION,
    DocumentType.FX_APPLICATION, DocumentType.CREDIT_NOTICE, DocumentType.TREASURY_REMITTANCE,
    DocumentType.FINAL_REPORT,
}


@pytest.fixture
def signing(settings, tmp_path):
    settings.DOCUMENT_PKI_DIR = tmp_path / "pki"
    settings.DOCUMENT_TRUST_ROOTS = []
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    call_command("make_dev_pki", dir=str(settings.DOCUMENT_PKI_DIR))


def run_lifecycle(flow, capture, until="closed"):
    """Each step in its own 'transaction', its after-commit work run as a worker would."""
    for step in STEPS[: STEPS.index(until) + 1]:
        with capture(execute=True):
            flow.to(step)
    return flow.refresh()


def test_each_producing_step_issues_its_document_signed_and_verifiable(
        flow, signing, django_capture_on_commit_callbacks, client):
    entrustment = run_lifecycle(flow, django_capture_on_commit_callbacks)
    refused = Event.objects.filter(entrustment=entrustment, type=EventType.DOCUMENT_REFUSED)
    assert not refused.exists(), [e.reason for e in refused]
    documents = Document.objects.filter(entrustment=entrustment)
    assert set(documents.values_list("type", flat=True)) == EXPECTED
    lots = Lot.objects.filter(entrustment=entrustment).count()
    assert documents.filter(type=DocumentType.SALE_CONFIRMATION).count() == lots
    for document in documents:
        pdf = document.file.read()
        check = validate_pdf(pdf)
        assert check.ok, (document, check.summary)
        assert document.issuer.name in check.signer
        response = client.get(reverse("documents:verify", args=[document.token]))
        assert response.status_code == 200
        assert document.number.encode() in response.content
    numbers = list(documents.values_list("number", flat=True))
    assert len(numbers) == len(set(numbers)), "numbers are unique"
    issued = Event.objects.filter(entrustment=entrustment, type=EventType.DOCUMENT_ISSUED).count()
    assert issued == documents.count()


def test_a_redelivered_generation_task_issues_nothing_twice(flow, signing, django_capture_on_commit_callbacks):
    from documents.tasks import generate_document

    run_lifecycle(flow, django_capture_on_commit_callbacks, until="bonded")
    bond_certificate = Document.objects.get(type=DocumentType.BOND_CERTIFICATE)
    again = generate_document(flow.entrustment.pk, bond_certificate.type, "", bond_certificate.trigger)
    assert again == bond_certificate.pk
    assert Document.objects.filter(type=DocumentType.BOND_CERTIFICATE).count() == 1


def test_a_new_version_supersedes_and_every_version_stays(flow, signing, django_capture_on_commit_callbacks,
                                                          client):
    run_lifecycle(flow, django_capture_on_commit_callbacks, until="agency_appointed")
    first = Document.objects.get(type=DocumentType.APPOINTMENT)
    second = document_regenerate(actor=flow.w.bce_approver, document=first, reason="typo in the agency's name")
    assert (second.number, second.version, second.supersedes) == (first.number, 2, first)
    assert not first.is_current and second.is_current
    assert first.file.read() and second.file.read()  # nothing overwritten
    old = client.get(reverse("documents:verify", args=[first.token]), HTTP_ACCEPT_LANGUAGE="en")
    assert old.status_code == 200 and old.context["verdict"] == "superseded"
    assert client.get(reverse("documents:verify", args=[second.token])).context["verdict"] == "current"
    sign_in(client, flow.w.shunyi_officer)
    page = client.get(reverse("entrustment-detail", args=[flow.entrustment.pk]))
    assert first.number in page.content.decode() and page.content.decode().count(first.number) >= 2


def test_only_the_issuers_staff_may_issue_a_new_version(flow, signing, django_capture_on_commit_callbacks):
    from cases.workflow import DisposalError

    run_lifecycle(flow, django_capture_on_commit_callbacks, until="agency_appointed")
    document = Document.objects.get(type=DocumentType.APPOINTMENT)
    with pytest.raises(DisposalError):
        document_regenerate(actor=flow.w.shunyi_officer, document=document, reason="not mine to issue")
    with pytest.raises(DisposalError):
        document_regenerate(actor=flow.w.bce_approver, document=document, reason="")
    assert Document.objects.filter(type=DocumentType.APPOINTMENT).count() == 1


def test_missing_signing_keys_are_recorded_not_printed_unsigned(flow, settings, tmp_path,
                                                                django_capture_on_commit_callbacks):
    settings.DOCUMENT_PKI_DIR, settings.MEDIA_ROOT = tmp_path / "no-pki", tmp_path / "media"
    run_lifecycle(flow, django_capture_on_commit_callbacks, until="submitted")
    assert not Document.objects.exists()
    refused = Event.objects.get(type=EventType.DOCUMENT_REFUSED)
    assert flow.w.shunyi.name in refused.reason
    assert "no-pki" not in refused.reason and ".pem" not in refused.reason  # no server paths on the record


def test_the_return_list_is_issued_when_returns_to_victims_were_paid(flow, signing,
                                                                    django_capture_on_commit_callbacks):
    from settlements import services as money

    run_lifecycle(flow, django_capture_on_commit_callbacks, until="credited")
    with django_capture_on_commit_callbacks(execute=True):
        victim_return = money.victim_return_prepare(actor=flow.w.shunyi_officer, entrustment=flow.entrustment,
                                                    recipient="张𠮷", recipient_account="6222000000000001",
                                                    amount_cny="1000.00", basis="判决第二项")
        money.victim_return_approve(actor=flow.w.shunyi_approver, victim_return=victim_return)
    with django_capture_on_commit_callbacks(execute=True):
        flow.to("remitted")
    document = Document.objects.get(entrustment=flow.entrustment, type=DocumentType.RETURN_LIST)
    assert validate_pdf(document.file.read()).ok
    assert Document.objects.filter(entrustment=flow.entrustment, type=DocumentType.TREASURY_REMITTANCE).exists()
