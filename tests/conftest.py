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
