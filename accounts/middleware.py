"""Refuse every page to a session that still owes its second factor."""

from urllib.parse import urlencode

from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from .services import confirmed_device, requires_two_factor

# Pages a signed-in person who still owes the second factor may reach: signing in and out,
# the two-factor pages themselves, the language switch, and the public document verification.
OPEN_VIEWS = frozenset({
    "login", "logout", "set_language", "documents:verify", "documents:verify-upload",
    "accounts:two-factor", "accounts:enrol",
})


class TwoFactorMiddleware:
    """After django-otp's OTPMiddleware: a session that must be OTP-verified and is not goes to
    the verification page (or enrolment, for someone without a device), whatever it asked for:
    portal pages, document downloads, the admin. Anonymous requests pass: views ask for the login."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.resolver_match.view_name in OPEN_VIEWS:
            return None
        user = request.user
        if not user.is_authenticated or user.is_verified() or not requires_two_factor(user):
            return None
        target = "accounts:two-factor" if confirmed_device(user) else "accounts:enrol"
        url = reverse(target) + "?" + urlencode({"next": request.get_full_path()})
        if request.headers.get("HX-Request"):
            # An htmx request would swap the verification page into a box: send the whole page there.
            return HttpResponse(headers={"HX-Redirect": url})
        return redirect(url)
