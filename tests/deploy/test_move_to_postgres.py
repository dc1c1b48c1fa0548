"""docs/deploy.md's "Move to PostgreSQL", step by step on a real SQLite file and a real PostgreSQL server: dump with
the documented flags, migrate and load, reset the id sequences, and the audit passes with every row moved; new rows
get fresh ids afterwards (the sequence reset is not optional).

Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust): required under CI=true, skipped elsewhere without it.
Runs once, in the SQLite pass.
"""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = "postgres://postgres@127.0.0.1:5432"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("DATABASE_URL", "").startswith("postgres"),
        reason="one move is enough: it runs in the SQLite pass",
    ),
]


def _postgres_connection(dbname: str = "postgres"):
    import psycopg

    return psycopg.connect(f"{SERVER}/{dbname}", autocommit=True, connect_timeout=5)


@pytest.fixture
def postgres_database():
    try:
        admin = _postgres_connection()
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no server here"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}")
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    name = f"ic_move_{os.getpid()}"
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{SERVER}/{name}"
    with _postgres_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(database_url: str, *args: str, stdin: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "storefront.settings",
            "DEBUG": "false",
            "SECRET_KEY": "move-test-secret-key-not-for-production",
            "DATABASE_URL": database_url,
            "LOG_FORMAT": "plain",
        }
    )
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def rows(count_sql: str, *, sqlite_file: Path | None = None, postgres_url: str | None = None) -> list[tuple]:
    if sqlite_file is not None:
        with sqlite3.connect(sqlite_file) as conn:
            return conn.execute(count_sql).fetchall()
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        return conn.execute(count_sql).fetchall()


WHAT_MUST_MOVE = (
    "SELECT (SELECT count(*) FROM vouchers_voucher), (SELECT count(*) FROM vouchers_ledgerentry),"
    " (SELECT sum(balance) FROM vouchers_creditaccount), (SELECT count(*) FROM auth_user)"
)


def test_the_documented_move_from_sqlite_to_postgresql_keeps_every_row_and_the_audit_clean(tmp_path, postgres_database):
    sqlite_url = f"sqlite:///{tmp_path / 'imagecredits.sqlite3'}"
    manage(sqlite_url, "migrate", "--noinput")
    codes = manage(sqlite_url, "issuevoucher", "5", "--count", "4").split()
    manage(
        sqlite_url,
        "shell",
        "-c",
        "from vouchers.services import voucher_redeem, credits_grant\n"
        "from django.contrib.auth import get_user_model\n"
        f"voucher_redeem(code={codes[0]!r}, discord_user_id=410000000000000555)\n"
        "credits_grant(discord_user_id=410000000000000666, amount=3, memo='move test')\n"
        "get_user_model().objects.create_superuser('admin', 'ops@example.com', 'pw-for-tests')\n",
    )
    manage(sqlite_url, "auditcredits")
    before = rows(WHAT_MUST_MOVE, sqlite_file=tmp_path / "imagecredits.sqlite3")

    dump = tmp_path / "dump.json"
    manage(
        sqlite_url,
        "dumpdata",
        "--natural-foreign",
        "--natural-primary",
        "--exclude",
        "contenttypes",
        "--exclude",
        "auth.permission",
        "--exclude",
        "admin.logentry",
        "--exclude",
        "sessions",
        "-o",
        str(dump),
    )
    manage(postgres_database, "migrate", "--noinput")
    manage(postgres_database, "loaddata", str(dump))
    reset = manage(postgres_database, "sqlsequencereset", "auth", "storefront", "vouchers", "discordbot")
    manage(postgres_database, "dbshell", stdin=reset)
    manage(postgres_database, "auditcredits")
    assert rows(WHAT_MUST_MOVE, postgres_url=postgres_database) == before

    # New rows get new ids: without the sequence reset this would collide with a loaded row's primary key.
    manage(postgres_database, "issuevoucher", "1", "--count", "2")
    manage(
        postgres_database,
        "shell",
        "-c",
        "from vouchers.services import credits_grant\n"
        "credits_grant(discord_user_id=410000000000000777, amount=1, memo='after the move')\n",
    )
    manage(postgres_database, "auditcredits")
