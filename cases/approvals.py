"""Four eyes, and the quorum of the jurisdiction's policy.

An approval binds a person to the exact content they approved (a digest of it). The
preparer never counts; an approval given to content that has since changed does not count.
Every action's quorum defaults to one approver; the policy can raise it per action
(`DisposalPolicy.quorums`).

Most approvals belong to an entrustment and use its policy. An approval of something that is
no entrustment's (an agency's address whitelist) passes `entrustment=None` and the policy of
the jurisdiction concerned; its record is the approval row and the subject's own history,
since a business event needs a case.
"""

import hashlib
import json

from django.utils.translation import gettext as _

from .models import Approval, EventType
from .workflow import DisposalError, emit


def digest_of(content: dict) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def count(*, action: str, subject: str, content: dict, preparer=None) -> int:
    """How many distinct people, not the preparer, approved exactly this content."""
    approvals = Approval.objects.filter(action=action, subject=subject, digest=digest_of(content))
    if preparer is not None:
        approvals = approvals.exclude(approver=preparer)
    return approvals.values("approver").distinct().count()


def reached(*, action: str, subject: str, content: dict, policy, preparer=None) -> bool:
    """The quorum is met for this content now (a read: approvals of older content do not count)."""
    return count(action=action, subject=subject, content=content, preparer=preparer) >= policy.quorum(action)


def approve(*, entrustment, action: str, subject: str, content: dict, actor, membership, preparer,
            policy=None, reason: str = "") -> bool:
    """Record `actor`'s approval; return True once the policy's quorum is reached.

    `policy` defaults to the entrustment's; pass it when `entrustment` is None.
    """
    policy = policy if policy is not None else entrustment.policy
    if preparer is not None and actor.pk == preparer.pk:
        raise DisposalError(_("The approver may not be the person who prepared it (four eyes)."))
    digest = digest_of(content)
    if Approval.objects.filter(action=action, subject=subject, digest=digest, approver=actor).exists():
        raise DisposalError(_("You have already approved this."))
    Approval.objects.create(entrustment=entrustment, action=action, subject=subject, digest=digest, approver=actor)
    if entrustment is not None:
        emit(
            case=entrustment.case,
            entrustment=entrustment,
            actor=actor,
            membership=membership,
            type=EventType.APPROVAL_GIVEN,
            reason=reason,
            details={"action": action, "subject": subject, "digest": digest,
                     "quorum": policy.quorum(action)},
        )
    return reached(action=action, subject=subject, content=content, policy=policy, preparer=preparer)
