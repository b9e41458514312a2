import logging

from celery import shared_task

from .services import document_issue

log = logging.getLogger(__name__)


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=5, retry_backoff_max=300, max_retries=5)
def generate_document(entrustment_id: int, doc_type: str, subject: str, trigger: str) -> int | None:
    """Issue one document for a step that produced it. Idempotent on `trigger`.

    Missing facts or missing signing keys are recorded on the entrustment by the service
    (an event saying what is missing) and not retried: retrying cannot supply them.
    """
    document = document_issue(entrustment_id=entrustment_id, doc_type=doc_type, subject=subject, trigger=trigger)
    return document.pk if document else None
