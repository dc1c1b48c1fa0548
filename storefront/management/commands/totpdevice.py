"""`manage.py totpdevice USERNAME [--name NAME]`: enrol a TOTP device (an authenticator app) for a staff user.

Prints the otpauth:// URL once, to add to the app (most apps accept it pasted, or as a QR code made from it).
Enrol every operator before setting ADMIN_OTP_REQUIRED=true: with it on, a user without a device cannot log in.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django_otp.plugins.otp_totp.models import TOTPDevice


class Command(BaseCommand):
    help = "Enrol a TOTP device for a staff user and print its otpauth:// URL (shown once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="authenticator app", help="A label for the device.")

    def handle(self, *args, username: str, name: str, **options) -> None:
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if not user.is_staff:
            raise CommandError(f"{username!r} is not staff: only staff use the admin.")
        device = TOTPDevice.objects.create(user=user, name=name, confirmed=True)
        self.stdout.write(device.config_url)
