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
