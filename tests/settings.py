"""Settings for the test suite: the real settings module, with test-safe values for what the environment lacks.

The test database is a real file (never `:memory:`), so concurrency tests can open it from threads and from
other processes. With DATABASE_URL pointing at PostgreSQL, the same suite runs there.
"""

import os
import tempfile

os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
os.environ.setdefault("STRIPE_SECRET_KEY", "sk_test_fake_key_for_tests")
os.environ.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_test_fake_secret_for_tests")
os.environ.setdefault("PAYMENTS_BACKEND", "stripe")
os.environ.setdefault("IMAGE_BACKEND", "placeholder")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("CACHE_URL", "locmemcache://")  # each test starts from an empty cache
os.environ.setdefault("DATA_DIR", os.path.join(tempfile.gettempdir(), "imagecredits-test-data"))

from storefront.settings import *  # noqa: E402,F403
from storefront.settings import DATA_DIR, DATABASES  # noqa: E402

if DATABASES["default"]["ENGINE"] == "storefront.sqlite_queued":  # SQLite, as storefront/settings.py configures it
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_imagecredits_{os.getpid()}"}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
# No processor threads: the tests run stored Stripe events themselves (tests/storefront/conftest.py `deliver`), or
# start a processor where threads are what is tested.
STRIPE_EVENT_THREADS = 0
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
# Serve static files straight from the finders: the suite never runs collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
