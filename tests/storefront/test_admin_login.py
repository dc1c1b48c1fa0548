"""Operators' logins: password rules, lockout after repeated failures, a configurable admin URL, short sessions,
the shop's name in the header, and the optional TOTP second factor (with real codes computed here, RFC 6238)."""

import base64
import hashlib
import hmac
import os
import struct
import subprocess
import sys
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
LOGIN = reverse("admin:login")
INDEX = reverse("admin:index")
STRONG = "correct-horse-battery-staple-42"


@pytest.fixture(autouse=True)
def _fresh_lockout_counts():
    # Failed-login counts live in the cache, which outlives a test.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def staff():
    return get_user_model().objects.create_user("ops", "ops@example.com", STRONG, is_staff=True, is_superuser=True)


def log_in(client: Client, password: str, **extra: str):
    return client.post(LOGIN, {"username": "ops", "password": password, "next": INDEX, **extra})


def logged_in(client: Client) -> bool:
    return client.get(INDEX).status_code == 200


# --- passwords -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weak", ["short1!", "password123456", "12345678901234", "ops@example.com"])
def test_weak_passwords_are_refused(staff, weak):
    with pytest.raises(ValidationError):
        validate_password(weak, user=staff)
    validate_password(STRONG, user=staff)


def test_the_admin_refuses_to_create_a_user_with_a_weak_password(client, staff):
    client.force_login(staff)
    add = reverse("admin:auth_user_add")

    weak = client.post(
        add, {"username": "newop", "password1": "secret", "password2": "secret", "usable_password": "true"}
    )
    strong = client.post(
        add, {"username": "newop", "password1": STRONG, "password2": STRONG, "usable_password": "true"}
    )

    assert weak.status_code == 200 and weak.context["adminform"].form.errors
    assert strong.status_code == 302
    assert get_user_model().objects.filter(username="newop").count() == 1


# --- lockout -------------------------------------------------------------------------------------------------


def test_forty_wrong_passwords_then_the_right_one_does_not_log_in(client, staff, settings):
    for _ in range(40):
        log_in(client, "wrong-password")

    response = log_in(client, STRONG)

    assert response.status_code == 429
    assert not logged_in(client)


def test_lockout_starts_at_the_limit_and_counts_per_username(client, staff, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in(client, "wrong-password").status_code == 200  # the login form again, with its error
    assert log_in(client, STRONG).status_code == 302  # one below the limit: still fine, and the count resets
    assert logged_in(client)

    other = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(other, "wrong-password")
    locked = log_in(other, STRONG)
    fresh_client_same_user = log_in(Client(), STRONG)

    assert locked.status_code == 429 and b"too many login attempts" in locked.content
    assert fresh_client_same_user.status_code == 429  # locked by username, not by browser


def test_a_locked_out_operator_is_let_back_in_by_a_reset(client, staff, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, "wrong-password")
    assert log_in(client, STRONG).status_code == 429

    # The cache handler stores the lockout with the cool-off as its expiry; an expired entry is a missing one.
    from axes.utils import reset

    reset(username="ops")  # what `manage.py axes_reset_username ops` does for an operator who calls in

    assert log_in(client, STRONG).status_code == 302
    assert settings.AXES_COOLOFF_TIME == timedelta(minutes=15)


# --- admin URL -------------------------------------------------------------------------------------------------


def test_admin_url_is_configurable():
    script = (
        "import django; django.setup();"
        "from django.test import Client; from django.urls import reverse;"
        "c = Client();"
        "print(reverse('admin:index'), c.get('/admin/').status_code, c.get('/back-office-7f3k/').status_code)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "ADMIN_URL": "/back-office-7f3k"}
    env.pop("DATABASE_URL", None)

    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["/back-office-7f3k/", "404", "302"]


def test_admin_url_defaults_to_admin():
    assert INDEX == "/admin/"


# --- sessions --------------------------------------------------------------------------------------------------


def test_admin_sessions_end_after_an_idle_hour_and_when_the_browser_closes(client, staff, settings):
    assert log_in(client, STRONG).status_code == 302

    assert settings.SESSION_COOKIE_AGE == 3600
    assert client.session.get_expiry_age() == 3600
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    assert not cookie["max-age"] and not cookie["expires"]  # a browser-session cookie

    # Activity pushes the end forward; an hour without any ends the session.
    Session.objects.update(expire_date=timezone.now() + timedelta(minutes=1))
    assert logged_in(client)
    assert Session.objects.get().expire_date > timezone.now() + timedelta(minutes=59)
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
    assert not logged_in(client)


# --- the shop's name -------------------------------------------------------------------------------------------


def test_the_header_shows_the_shops_name(client, staff, settings):
    client.force_login(staff)
    assert "Image Credits admin" in client.get(INDEX).content.decode()

    settings.SHOP_NAME = "Pixel Forge"
    page = client.get(INDEX).content.decode()

    assert '<div id="site-name"><a href="/admin/">Pixel Forge admin</a></div>' in page
    assert "<title>Site administration | Pixel Forge admin</title>" in page or "Pixel Forge admin</title>" in page


# --- TOTP second factor ----------------------------------------------------------------------------------------


def totp_now(secret_b32: str, *, step: int = 30, digits: int = 6, at: float | None = None) -> str:
    """RFC 6238 TOTP (HMAC-SHA1), written out here so the test does not trust the library it checks."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    counter = int((time.time() if at is None else at) // step)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 10**digits
    return f"{code:0{digits}d}"


@pytest.fixture
def enrolled(staff) -> tuple[str, str]:
    """The staff user with a TOTP device enrolled through `manage.py totpdevice`: (device id, base32 secret)."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    out = StringIO()
    call_command("totpdevice", "ops", stdout=out)
    url = out.getvalue().strip()
    assert url.startswith("otpauth://totp/")
    secret = parse_qs(urlsplit(url).query)["secret"][0]
    device = TOTPDevice.objects.get(user=staff)
    return device.persistent_id, secret


def test_with_otp_required_a_password_alone_does_not_open_the_admin(client, enrolled, settings):
    settings.ADMIN_OTP_REQUIRED = True

    response = log_in(client, STRONG)

    assert response.status_code == 200  # the form again, asking for the code
    assert 'name="otp_token"' in response.content.decode()
    assert not logged_in(client)


def test_with_otp_required_a_wrong_code_is_refused(client, enrolled, settings):
    settings.ADMIN_OTP_REQUIRED = True
    device_id, secret = enrolled
    wrong = f"{(int(totp_now(secret)) + 1) % 10**6:06d}"

    log_in(client, STRONG, otp_device=device_id, otp_token=wrong)

    assert not logged_in(client)


def test_with_otp_required_the_right_code_opens_the_admin_once(client, enrolled, settings):
    settings.ADMIN_OTP_REQUIRED = True
    device_id, secret = enrolled
    code = totp_now(secret)

    response = log_in(client, STRONG, otp_device=device_id, otp_token=code)

    assert response.status_code == 302, response.content.decode()[:2000]
    assert logged_in(client)
    replay = Client()
    log_in(replay, STRONG, otp_device=device_id, otp_token=code)
    assert not logged_in(replay)  # a code is good for one login


def test_with_otp_required_an_unverified_session_is_not_staff(client, staff, settings):
    client.force_login(staff)  # a session that never gave a code (e.g. from before OTP was switched on)
    assert logged_in(client)

    settings.ADMIN_OTP_REQUIRED = True

    response = client.get(INDEX)
    assert response.status_code == 302 and response["Location"].startswith(LOGIN)
    assert client.get(reverse("admin:dashboard")).status_code == 302


def test_totpdevice_refuses_unknown_and_non_staff_users(db):
    from django.core.management.base import CommandError

    get_user_model().objects.create_user("customer", "c@example.com", STRONG)
    with pytest.raises(CommandError, match="No user"):
        call_command("totpdevice", "nobody", stdout=StringIO())
    with pytest.raises(CommandError, match="not staff"):
        call_command("totpdevice", "customer", stdout=StringIO())
