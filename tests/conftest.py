"""Shared test helpers."""

import pytest


@pytest.fixture
def assert_audit_clean(db):
    """Call after a scenario: every credit invariant of DESIGN.md must hold."""
    from vouchers.audit import audit_credits

    def check() -> None:
        broken = {name: problems for name, problems in audit_credits().items() if problems}
        assert not broken, broken

    return check


@pytest.fixture
def operator(client):
    """A test client logged in as a superuser named "operator"."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("operator", "op@example.com", "pw-for-tests")
    client.force_login(user)
    return client


@pytest.fixture
def staff_login(db):
    """`staff_login(*perms)`: a fresh client logged in as a staff user holding exactly `perms` ("app.codename")."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.test import Client

    made = 0

    def login(*perms: str) -> Client:
        nonlocal made
        made += 1
        user = get_user_model().objects.create_user(f"staff{made}", f"staff{made}@example.com", "pw", is_staff=True)
        for perm in perms:
            app_label, codename = perm.split(".")
            user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        client = Client()
        client.force_login(user)
        return client

    return login
