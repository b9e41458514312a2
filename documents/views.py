"""Documents inside the portal: download a version, issue a new one (authorised staff)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from cases.access import entrustment_for_user
from cases.workflow import DisposalError

from .models import Document
from .services import document_regenerate


def document_for_user(user, pk) -> Document:
    """Fetch and authorise: a document is visible to whoever may see its entrustment."""
    document = Document.objects.select_related("entrustment").filter(pk=pk).first()
    if document is None:
        raise Http404
    entrustment_for_user(user, document.entrustment_id)
    return document


@login_required
def download(request, pk):
    document = document_for_user(request.user, pk)
    return FileResponse(document.file.open("rb"), as_attachment=True, content_type="application/pdf",
                        filename=f"{document.number}-v{document.version}.pdf")


@login_required
@require_POST
def regenerate(request, pk):
    document = document_for_user(request.user, pk)
    try:
        new = document_regenerate(actor=request.user, document=document, reason=request.POST.get("reason", ""))
    except DisposalError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{new.number} v{new.version}")
    return redirect("entrustment-detail", pk=document.entrustment_id)



