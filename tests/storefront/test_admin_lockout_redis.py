"""The admin login lockout counted in Redis (CACHE_URL=redis://...): failures in one process lock the username out
in another, as they must when several gunicorn workers serve the admin.

Needs the Redis server at 127.0.0.1:6379: skipped locally when it is not running, required under CI=true.
"""

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from axes.handlers.proxy import AxesProxyHandler
from axes.utils import reset
from django.test import Client
from django.urls import reverse

from tests.vouchers.conftest import child_database_url

REDIS_URL = "redis://127.0.0.1:6379/14"
ROOT = Path(__file__).resolve().parents[2]


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


if not _redis_up():
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI=true but Redis is not reachable at 127.0.0.1:6379")
    pytest.skip("Redis is not running at 127.0.0.1:6379", allow_module_level=True)

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_lockouts(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    AxesProxyHandler.get_implementation(force=True)  # the handler keeps its cache: make it take Redis
    yield
    AxesProxyHandler.implementation = None  # the next user of the handler builds it on the test's cache again


CHILD = """
import django
django.setup()
from django.test import Client
from django.urls import reverse
for username in {usernames!r}:
    response = Client().post(reverse("admin:login"), {{"username": username, "password": "correct-horse-42-battery"}})
    print(response.status_code)
"""


def test_failures_in_one_process_lock_the_username_out_in_another(redis_lockouts, settings):
    locked, untouched = f"ops-{uuid.uuid4().hex[:8]}", f"ops-{uuid.uuid4().hex[:8]}"
    try:
        for _ in range(settings.AXES_FAILURE_LIMIT):
            Client().post(reverse("admin:login"), {"username": locked, "password": "wrong"})

        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "CACHE_URL": REDIS_URL,
            "DATABASE_URL": child_database_url(),
        }
        child = subprocess.run(
            [sys.executable, "-c", CHILD.format(usernames=[locked, untouched])],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

        assert child.returncode == 0, child.stderr
        # 429: locked out before the password is looked at; 200: the login form again (no such user here).
        assert child.stdout.split() == ["429", "200"]
    finally:
        reset(username=locked)
        reset(username=untouched)
