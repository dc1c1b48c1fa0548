"""The container's entrypoint: make sure the database is there (restoring it from Litestream's replica into an
empty volume), check the configuration, then exec the process the container is for.

    entrypoint.py web        gunicorn serving the storefront (refuses to start on unapplied migrations)
    entrypoint.py bot        manage.py runbot (same refusal)
    entrypoint.py migrate    manage.py migrate: run once per deploy, before the new code serves (docs/deploy.md)
    entrypoint.py replicate  litestream replicate: continuous backup of the SQLite file to LITESTREAM_REPLICA_URL
    entrypoint.py restore [--replace] [-timestamp T | -txid X]
                             restore the replica into the data folder (an operator's one-off task, with every
                             service stopped); --replace moves an existing database aside first
    entrypoint.py manage ARGS...   any management command (the scheduled jobs: reconcile orders, ...)

It runs under tini (the image's init), which passes SIGTERM on, and it `exec`s its final process so that process
receives SIGTERM itself. Nothing here imports Django before the database is in place: opening a SQLite file that
is not there creates an empty one, which is exactly the silent failure this guards against.

SQLite rules, under a lock on the data folder because web, bot and the replicator may start at once:
- The data folder must be writable by this (non-root) user; if not, say which owner and mode would work.
- No database file and LITESTREAM_REPLICA_URL set: restore the latest backup. An unreadable replica (no access,
  no bucket, broken files) stops the container: starting empty would hide the data rather than lose it, but
  a buyer's voucher issued on the empty database would be lost at the next restore.
- No database and a replica with no backup at all: only `migrate` with ALLOW_EMPTY_DATABASE=true may create a
  new database (the very first deploy). Everything else refuses, so a wrong replica path cannot silently
  start an empty shop.
- No database and no replica configured: only `migrate` creates it.
"""

import fcntl
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import environ

APP_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(APP_DIR))  # run as a script from ecs/: the Django project is one level up
LITESTREAM_CONFIG = APP_DIR / "ecs" / "litestream.yml"
# sysexits.h EX_CONFIG: the container is misconfigured; restarting it will not help.
EX_CONFIG = 78
ROLES = ("web", "bot", "migrate", "replicate", "restore", "manage")


def fail(message: str) -> None:
    print(f"entrypoint: {message}", file=sys.stderr, flush=True)
    sys.exit(EX_CONFIG)


def say(message: str) -> None:
    print(f"entrypoint: {message}", file=sys.stderr, flush=True)


def sqlite_path() -> Path | None:
    """The SQLite file DATABASE_URL names (as storefront/settings.py reads it), or None for another database."""
    data_dir = os.environ.get("DATA_DIR", str(APP_DIR / "data"))
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{Path(data_dir) / 'db.sqlite3'}"
    config = environ.Env.db_url_config(url)
    if config["ENGINE"] != "django.db.backends.sqlite3":
        return None
    return Path(config["NAME"])


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        try:
            info = folder.stat()
            owner = f"owned by uid {info.st_uid} gid {info.st_gid}, mode {info.st_mode & 0o7777:o}"
        except OSError:
            owner = "which cannot be inspected"
        fail(
            f"the data folder {folder} ({owner}) is not writable by this container's user "
            f"uid {os.getuid()} gid {os.getgid()} ({exc.strerror}). SQLite needs to create its database, WAL and "
            f"lock files there. On the host, give the mounted folder to that user: "
            f"`chown -R {os.getuid()}:{os.getgid()} HOST_FOLDER` (ecs/stack.yaml does it for the EBS volume)."
        )


def database_missing(db: Path) -> bool:
    # A zero-byte file is what an earlier connection to a missing file left behind: still no database.
    return not db.exists() or (db.stat().st_size == 0 and not Path(f"{db}-wal").exists())


def ensure_database(db: Path, role: str) -> None:
    """Restore or refuse, per the rules in the module docstring. Called with the data folder locked."""
    if not database_missing(db):
        return
    replica = os.environ.get("LITESTREAM_REPLICA_URL", "")
    may_create = role == "migrate"
    if replica:
        say(f"no database at {db}: restoring the latest backup from the Litestream replica")
        db.unlink(missing_ok=True)
        restore = subprocess.run(
            ["litestream", "restore", "-config", str(LITESTREAM_CONFIG), "-if-replica-exists", str(db)],
            env={**os.environ, "LITESTREAM_DB_PATH": str(db)},
            capture_output=True,
            text=True,
        )
        if restore.returncode != 0:
            fail(
                "refusing to start on an empty database: LITESTREAM_REPLICA_URL is set but the replica could not "
                f"be read (litestream exit {restore.returncode}): {restore.stderr.strip()[-800:]}"
            )
        if not database_missing(db):
            say(f"restored {db} ({db.stat().st_size} bytes) from the replica")
            return
        may_create = may_create and os.environ.get("ALLOW_EMPTY_DATABASE", "").lower() in ("1", "true", "yes")
        if not may_create:
            fail(
                f"refusing to start on an empty database: there is no database at {db} and the replica holds no "
                "backup. If this is the very first deploy, run the migrate task once with ALLOW_EMPTY_DATABASE=true "
                "(docs/deploy.md); otherwise check LITESTREAM_REPLICA_URL."
            )
        say("the replica holds no backup and ALLOW_EMPTY_DATABASE is set: creating a new, empty database")
    elif not may_create:
        fail(f"there is no database at {db}: run the migrate task first (docs/deploy.md).")


def restore_on_request(db: Path, args: list[str]) -> None:
    """The operator's restore: latest or point in time (litestream's -timestamp/-txid), never over a live file."""
    replace = "--replace" in args
    litestream_args = [a for a in args if a != "--replace"]
    if not os.environ.get("LITESTREAM_REPLICA_URL"):
        fail("LITESTREAM_REPLICA_URL is empty: there is no replica to restore from.")
    with open(db.parent / ".entrypoint.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not database_missing(db):
            if not replace:
                fail(f"{db} exists; stop every service, then run `restore --replace` to move it aside and restore.")
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            for suffix in ("", "-wal", "-shm"):
                old = Path(f"{db}{suffix}")
                if old.exists():
                    old.rename(f"{db}.replaced-{stamp}{suffix}")
            say(f"moved the existing database aside to {db}.replaced-{stamp}")
        restore = subprocess.run(
            ["litestream", "restore", "-config", str(LITESTREAM_CONFIG), *litestream_args, str(db)],
            env={**os.environ, "LITESTREAM_DB_PATH": str(db)},
        )
        if restore.returncode != 0 or database_missing(db):
            fail(f"the restore failed (litestream exit {restore.returncode}); see its output above.")
        say(f"restored {db} ({db.stat().st_size} bytes)")


def prepare_sqlite(role: str) -> None:
    db = sqlite_path()
    if db is None:
        return  # PostgreSQL: nothing on the volume to restore; `migrate --check` below still applies
    check_writable(db.parent)
    with open(db.parent / ".entrypoint.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # web, bot and replicator restore once, not three times
        ensure_database(db, role)
    os.environ["LITESTREAM_DB_PATH"] = str(db)


def check_ready_to_serve() -> None:
    """The production configuration passes the deploy checks, and every migration of this code is applied."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "storefront.settings")
    import django
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError
    from django.db import connections

    django.setup()
    try:
        call_command("check", deploy=True, fail_level="ERROR")
    except SystemCheckError as exc:
        fail(f"the configuration fails `manage.py check --deploy`:\n{exc}")
    try:
        call_command("migrate", check=True, verbosity=0)
    except SystemExit:
        fail("this release has unapplied migrations: run the migrate task of this release first (docs/deploy.md).")
    connections.close_all()


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ROLES:
        fail(f"usage: entrypoint.py {{{','.join(ROLES)}}} [ARGS...]; got {argv!r}")
    role, args = argv[0], argv[1:]
    os.chdir(APP_DIR)  # gunicorn reads ./gunicorn.conf.py; manage.py lives here
    if role == "restore":
        db = sqlite_path()
        if db is None:
            fail("restore is for the SQLite database; PostgreSQL (RDS) restores from its own snapshots.")
        check_writable(db.parent)
        restore_on_request(db, args)
        return
    prepare_sqlite(role)
    python = sys.executable
    if role == "web":
        check_ready_to_serve()
        os.execvp("gunicorn", ["gunicorn", "storefront.wsgi", *args])
    if role == "bot":
        check_ready_to_serve()
        os.execv(python, [python, "manage.py", "runbot", *args])
    if role == "migrate":
        os.execv(python, [python, "manage.py", "migrate", "--noinput", *args])
    if role == "replicate":
        if not os.environ.get("LITESTREAM_REPLICA_URL"):
            fail("LITESTREAM_REPLICA_URL is empty: nothing to replicate to (see .env.example).")
        if "LITESTREAM_DB_PATH" not in os.environ:
            fail("Litestream replicates the SQLite database only; DATABASE_URL names another database.")
        os.execvp("litestream", ["litestream", "replicate", "-config", str(LITESTREAM_CONFIG), *args])
    os.execv(python, [python, "manage.py", *args])


if __name__ == "__main__":
    main(sys.argv[1:])
