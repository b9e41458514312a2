"""Remove a person's authenticator and backup codes (lost phone); they enrol again at next sign-in."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.services import two_factor_reset


class Command(BaseCommand):
    help = "Reset a user's two-factor devices so that they enrol again at their next sign-in."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        removed = two_factor_reset(user=user)
        self.stdout.write(f"{username}: {removed} device(s) removed; the next sign-in enrols a new authenticator.")
