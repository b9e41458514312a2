"""Four eyes, and the quorum of the jurisdiction's policy.

An approval binds a person to the exact content they approved (a digest of it). The
preparer never counts; an approval given to content that has since changed does not count.
Today every action's quorum defaults to one approver; the policy can raise it per action.
"""

import hashlib
import json

from django.utils.translation import gettext as _

from .models import Approval, EventType
from .workflow import DisposalError, emit


def digest_of(content: dict) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def approve(*, entrustment, action: str, subject: str, content: dict, actor, membership, preparer) -> bool:
    """Record `actor`'s approval; return True once the policy's quorum is reached."""
    if preparer is not None and actor.pk == preparer.pk:
        raise DisposalError(_("The approver may not be the person who prepared it (four eyes)."))
    digest = digest_of(content)
    if Approval.objects.filter(action=action, subject=subject, digest=digest, approver=actor).exists():
        raise DisposalError(_("You have already approved this."))
    Approval.objects.create(entrustment=entrustment, action=action, subject=subject, digest=digest, approver=actor)
    emit(
        case=entrustment.case,
        entrustment=entrustment,
        actor=actor,
        membership=membership,
        type=EventType.APPROVAL_GIVEN,
        details={"action": action, "subject": subject, "digest": digest},
    )
    approvals = Approval.objects.filter(action=action, subject=subject, digest=digest)
    if preparer is not None:
        approvals = approvals.exclude(approver=preparer)
    return approvals.count() >= entrustment.policy.quorum(action)
