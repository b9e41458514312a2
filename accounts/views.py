"""Two-factor sign-in pages: verify a code, enrol an authenticator, renew backup codes."""

from base64 import b32encode

import segno
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache

from . import services
from .forms import CodeForm


def _next_url(request) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()},
                                       require_https=request.is_secure()):
        return candidate
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def _refused(form, device):
    until = services.throttled_until(device) if device is not None else None
    if until:
        form.add_error("code", _("Too many wrong codes. Try again after %(time)s.") % {
            "time": timezone.localtime(until).strftime("%H:%M:%S")})
    else:
        form.add_error("code", _("That code is not valid. Codes work once and change every 30 seconds."))


@never_cache
@login_required
def verify(request):
    if request.user.is_verified() or not services.requires_two_factor(request.user):
        return redirect(_next_url(request))
    device = services.confirmed_device(request.user)
    if device is None and not services.backup_codes_left(request.user):
        return redirect(f"{reverse('accounts:enrol')}?{request.GET.urlencode()}")
    form = CodeForm(request.POST or None)
    if form.is_valid():
        if services.two_factor_verify(request=request, code=form.cleaned_data["code"]) is not None:
            return redirect(_next_url(request))
        _refused(form, device)
    return render(request, "accounts/verify.html", {"form": form, "next": _next_url(request)})


@never_cache
@login_required
def enrol(request):
    if services.confirmed_device(request.user) is not None:
        # Replacing a device takes a reset by an administrator, never a signed-in session alone.
        return redirect(f"{reverse('accounts:two-factor')}?{request.GET.urlencode()}")
    device = services.pending_device(request.user)
    form = CodeForm(request.POST or None)
    if form.is_valid():
        codes = services.totp_enrol_confirm(request=request, device=device, code=form.cleaned_data["code"])
        if codes is not None:
            # Shown in this answer only: the clear codes are stored nowhere.
            return render(request, "accounts/backup_codes.html",
                          {"codes": codes, "next": _next_url(request), "enrolled": True})
        _refused(form, device)
    secret = b32encode(device.bin_key).decode()
    context = {
        "form": form,
        "next": _next_url(request),
        "qr_svg": segno.make(device.config_url, error="m").svg_inline(scale=4, omitsize=False),
        "secret_groups": [secret[i:i + 4] for i in range(0, len(secret), 4)],
    }
    return render(request, "accounts/enrol.html", context)


@never_cache
@login_required
def backup_codes(request):
    """How many backup codes are left; a POST replaces them all with new ones, shown once."""
    if not services.requires_two_factor(request.user):
        return redirect(settings.LOGIN_REDIRECT_URL)
    if request.method == "POST":
        codes = services.backup_codes_issue(user=request.user)
        return render(request, "accounts/backup_codes.html",
                      {"codes": codes, "next": resolve_url(settings.LOGIN_REDIRECT_URL)})
    return render(request, "accounts/backup_codes.html", {"left": services.backup_codes_left(request.user)})


def lockout(request, original_response=None, credentials=None):
    """django-axes' answer to a locked-out sign-in (AXES_LOCKOUT_CALLABLE): a page, in the person's language."""
    limit = settings.AXES_FAILURE_LIMIT
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60) if settings.AXES_COOLOFF_TIME else None
    return render(request, "accounts/lockout.html", {"failure_limit": limit, "cooloff_minutes": minutes},
                  status=429)
