"""Settings for the whole product, read from the environment (and an optional `.env` file) by django-environ.

Every variable is listed and explained in `.env.example`. Secrets have no defaults outside DEBUG; test-mode
backends are chosen only when their keys are absent and DEBUG is on, and `manage.py check --deploy` fails
loudly on a production configuration that would use them (see `storefront/checks.py`).
"""

import os
import tempfile
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local `.env` is a convenience for development; real deployments set the environment directly.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
# Which process this is, so `manage.py check --deploy` demands only the keys it uses (storefront/checks.py):
# `web` (gunicorn: Stripe), `bot` (runbot: Discord, OpenAI), `jobs` (scheduled commands: Stripe), `all` (one
# process or machine running everything, as `make run` does).
APP_ROLE = env.str("APP_ROLE", default="all")
if APP_ROLE not in ("all", "web", "bot", "jobs"):
    raise ImproperlyConfigured(f"APP_ROLE must be all, web, bot or jobs, not {APP_ROLE!r} (see .env.example).")

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (see .env.example).")
    SECRET_KEY = "django-insecure-development-only-key-do-not-deploy"  # noqa: S105 - DEBUG only

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Absolute base URL of the storefront, used in emails and in the bot's /buy links.
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "storefront.apps.ShopAdminConfig",  # django.contrib.admin with our admin site (storefront/admin_site.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "storefront",
    "vouchers",
    "discordbot",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
]

MIDDLEWARE = [
    "storefront.requestlog.RequestIdMiddleware",  # first: every log line of a request carries its id
    "storefront.middleware.HealthCheckMiddleware",  # first: health checks come by IP over plain HTTP
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified() for the optional second factor
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "storefront.middleware.BrandedErrorMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into its 429 page
]

ROOT_URLCONF = "storefront.urls"
WSGI_APPLICATION = "storefront.wsgi.application"
ASGI_APPLICATION = "storefront.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "storefront.context_processors.shop",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------------
DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "data")))
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}")}
# Optional: the password apart from the URL, as ECS injects it from the secret RDS manages (ecs/stack.yaml).
if DATABASE_PASSWORD := env.str("DATABASE_PASSWORD", default=""):
    DATABASES["default"]["PASSWORD"] = DATABASE_PASSWORD
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web and bot containers write to one SQLite file from two processes. WAL lets readers run beside
    # the writer; synchronous=NORMAL is durable across process crashes in WAL mode; the busy timeout makes a
    # second writer wait instead of failing; IMMEDIATE takes the write lock at BEGIN, so a transaction that
    # reads then writes cannot fail half-way with "database is locked" (a DEFERRED one ignores the timeout).
    # The engine is Django's, with writers queued on a file lock rather than SQLite's sleeping busy handler,
    # which kept the ledger's p99 near 40 ms with two writing processes (see storefront/sqlite_queued).
    DATABASES["default"]["ENGINE"] = "storefront.sqlite_queued"
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": env.int("SQLITE_BUSY_TIMEOUT", default=20),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
# Keep connections open: closing a WAL connection forces a checkpoint and an fsync on every request.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Rate limits, failed-redeem counts and login lockouts must be shared by every process, so production's default is
# a table in the database every process already shares (created by `migrate`); Redis (redis://...) is faster when
# there is one. Local development (DEBUG) keeps a per-process memory cache.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://" if DEBUG else "dbcache://imagecredits_cache")}

# --- Email ----------------------------------------------------------------------------------------------
vars().update(env.email("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Image Credits <noreply@localhost>")

# --- Static files (served by whitenoise; no external CDN) ----------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Security (production) -----------------------------------------------------------------------------
# No SECURE_PROXY_SSL_HEADER: Django would believe X-Forwarded-Proto from anyone who can reach the port.
# gunicorn decides instead (gunicorn.conf.py): it honours the header only from FORWARDED_ALLOW_IPS (the load
# balancer's subnets) and sets the request's scheme, which is what Django's is_secure() then reads.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 3600)
# The shop's domain (and its subdomains) is HTTPS only. Preload marks the header as eligible for browsers'
# preload lists; nothing is submitted unless an operator does it (hstspreload.org, which wants a year of max-age).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True

# --- Operators' logins (the admin) ---------------------------------------------------------------------
# Where the admin lives, relative to the site root (e.g. "back-office-7f3k/"); default "admin/".
ADMIN_URL = env.str("ADMIN_URL", default="admin/").strip("/") + "/"
if ADMIN_URL == "/":
    raise ImproperlyConfigured("ADMIN_URL must not be empty (the shop itself lives at /).")
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env.int("PASSWORD_MIN_LENGTH", default=12)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Sessions exist only for operators. A session ends after this many seconds without an admin request (each
# request pushes the end forward) and when the browser closes; Django's default is two weeks.
SESSION_COOKIE_AGE = env.int("ADMIN_SESSION_SECONDS", default=3600)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# Lockout after repeated failed logins (django-axes), counted in the cache (CACHE_URL: with several processes,
# use Redis so they share one count). Locked by username: behind the load balancer every client would share one
# address, so locking by address would lock every operator out at once.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out login before the password is checked
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username"]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ADMIN = False  # the cache handler keeps no rows to show
# W006 asks for the client address in the lockout key; see above for why it is the username alone here.
SILENCED_SYSTEM_CHECKS = ["axes.W006"]
# Optional second factor: when on, staff must also give a code from a TOTP device (an authenticator app) at
# login. Enrol a device first with `manage.py totpdevice USERNAME`, then turn this on.
ADMIN_OTP_REQUIRED = env.bool("ADMIN_OTP_REQUIRED", default=False)
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Image Credits admin")
OTP_ADMIN_HIDE_SENSITIVE_DATA = True  # the device admin never shows a device's secret key again

# --- Payments -------------------------------------------------------------------------------------------
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
# Optional: points stripe-python at stripe-mock or a test fake instead of api.stripe.com.
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")
# `stripe` or `test`. The built-in test-mode checkout is the default only in DEBUG without Stripe keys.
PAYMENTS_BACKEND = env.str("PAYMENTS_BACKEND", default="test" if DEBUG and not STRIPE_SECRET_KEY else "stripe")
# Bounds on each call to Stripe, so a slow or unreachable Stripe cannot hold a buyer's request for minutes.
STRIPE_TIMEOUT_SECONDS = env.float("STRIPE_TIMEOUT_SECONDS", default=20)
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", default=2)
# Stripe events are acknowledged once stored, then processed by threads in each web worker (storefront/eventqueue.py):
# how many run at once per worker (each waits on Stripe or email, so they cost little CPU; 0: none in this
# process), how often each worker looks for due, retried or abandoned events, and how long a claim holds an event
# before another processor may take it over (gunicorn.conf.py refuses one shorter than two worst Stripe calls).
STRIPE_EVENT_THREADS = env.int("STRIPE_EVENT_THREADS", default=32)
STRIPE_EVENT_POLL_SECONDS = env.float("STRIPE_EVENT_POLL_SECONDS", default=5)
STRIPE_EVENT_LEASE_SECONDS = env.int("STRIPE_EVENT_LEASE_SECONDS", default=300)
# Per-client limits, "requests/seconds", counted in CACHE_URL (use Redis when there is more than one web process).
CHECKOUT_RATE_LIMIT = env.str("CHECKOUT_RATE_LIMIT", default="10/60")
SUCCESS_PAGE_RATE_LIMIT = env.str("SUCCESS_PAGE_RATE_LIMIT", default="60/60")
# Proxies in front of the web server that append the client's address to X-Forwarded-For (1 behind an ALB).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# --- The shop's public face ----------------------------------------------------------------------------
# Shown in the header, page titles, emails and on Stripe Checkout.
SHOP_NAME = env.str("SHOP_NAME", default="Image Credits")
# How buyers reach a person: an email address or an https:// URL (a help page, a Discord channel link).
# Stripe expects a contact on the site; pages, emails and the legal pages show it.
SUPPORT_CONTACT = env.str("SUPPORT_CONTACT", default="")
# An invite to the Discord server where the bot lives (https://discord.gg/...). Empty: no invite button.
DISCORD_INVITE_URL = env.str("DISCORD_INVITE_URL", default="")
# The business behind the shop, as it should appear in the legal pages (e.g. "Example Studio Ltd, London").
# Empty: the legal pages speak of SHOP_NAME.
LEGAL_ENTITY = env.str("LEGAL_ENTITY", default="")

# --- Stripe Checkout options (each off by default; see README "Going live") -----------------------------
# A promotion-code field on Checkout (codes are made in Stripe's dashboard). The voucher is still for the
# pack's credits; Stripe records the discount.
STRIPE_CHECKOUT_PROMOTION_CODES = env.bool("STRIPE_CHECKOUT_PROMOTION_CODES", default=False)
# Stripe Tax computes tax from the buyer's address (needs Stripe Tax set up in the dashboard).
STRIPE_CHECKOUT_AUTOMATIC_TAX = env.bool("STRIPE_CHECKOUT_AUTOMATIC_TAX", default=False)
# Stripe creates a paid invoice for each purchase and emails it with the receipt (Stripe charges per invoice).
STRIPE_CHECKOUT_INVOICE = env.bool("STRIPE_CHECKOUT_INVOICE", default=False)
# Buyers must tick "I agree to the terms" on Checkout. Needs the terms URL (SITE_URL/terms/) set in Stripe's
# dashboard, under Settings > Public details, or Stripe refuses every Checkout Session.
STRIPE_CHECKOUT_TERMS_CONSENT = env.bool("STRIPE_CHECKOUT_TERMS_CONSENT", default=False)

# --- Discord --------------------------------------------------------------------------------------------
DISCORD_TOKEN = env.str("DISCORD_TOKEN", default="")
DISCORD_TEST_GUILD_ID = env.int("DISCORD_TEST_GUILD_ID", default=None)
# Failed /redeem attempts a member may make per window before /redeem refuses them (counted in CACHE_URL).
REDEEM_MAX_FAILURES = env.int("REDEEM_MAX_FAILURES", default=5)
REDEEM_FAILURE_WINDOW_SECONDS = env.int("REDEEM_FAILURE_WINDOW_SECONDS", default=900)
# Discord's checkout (a pack with a Discord SKU id): how often the bot offers Discord again the purchases it credited
# but could not consume (a failed call). Consuming lets the member buy the pack again; it never credits twice.
DISCORD_CONSUME_RETRY_SECONDS = env.float("DISCORD_CONSUME_RETRY_SECONDS", default=60)

# --- Images ---------------------------------------------------------------------------------------------
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
# Read by the openai client itself too; empty means api.openai.com.
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="")
IMAGE_MODEL = env.str("IMAGE_MODEL", default="gpt-image-2.5-flare")
# `openai` or `placeholder` (a local Pillow image, for keyless development).
IMAGE_BACKEND = env.str("IMAGE_BACKEND", default="placeholder" if DEBUG and not OPENAI_API_KEY else "openai")
MAX_CONCURRENT_GENERATIONS = env.int("MAX_CONCURRENT_GENERATIONS", default=8)
GENERATIONS_PER_MEMBER = env.int("GENERATIONS_PER_MEMBER", default=1)
# Credits per image by size, then quality. The first size and "medium" are what /generate uses by default.
GENERATION_COSTS = env.json(
    "GENERATION_COSTS",
    default={
        "1024x1024": {"low": 1, "medium": 1, "high": 3},
        "1536x1024": {"low": 1, "medium": 2, "high": 4},
        "1024x1536": {"low": 1, "medium": 2, "high": 4},
    },
)
GENERATION_DEFAULT_QUALITY = "medium"
# Credits added to each image of an edit or a variation (on top of GENERATION_COSTS): the input pictures are
# billed by the image service as input tokens. See vouchers.pricing.image_cost.
IMAGE_OPERATION_SURCHARGES = env.json("IMAGE_OPERATION_SURCHARGES", default={"generate": 0, "edit": 1, "variation": 1})
# Images one request may ask for (the `count` option); the image API allows 1-10.
IMAGE_MAX_COUNT = env.int("IMAGE_MAX_COUNT", default=4)
# Live previews: partial images (0-3) streamed per image and shown in the "making your image" message, at most
# one edit per IMAGE_PREVIEW_INTERVAL_SECONDS per message (Discord rate-limits message edits). 0 turns them off.
IMAGE_PREVIEW_PARTIALS = env.int("IMAGE_PREVIEW_PARTIALS", default=0)
IMAGE_PREVIEW_INTERVAL_SECONDS = env.float("IMAGE_PREVIEW_INTERVAL_SECONDS", default=1.5)
# What the image service charges, per model and token kind, in micro-dollars per token (= US dollars per 1M
# tokens on OpenAI's price page). Empty: image spend is recorded as unknown. See discordbot/spend.py.
IMAGE_SPEND_PRICES = env.json("IMAGE_SPEND_PRICES", default={})
# Pictures members attach (/edit): read from Discord's CDN, bounded in size, pixels and time; only these hosts.
IMAGE_INPUT_MAX_BYTES = env.int("IMAGE_INPUT_MAX_BYTES", default=10 * 1024 * 1024)
IMAGE_INPUT_MAX_PIXELS = env.int("IMAGE_INPUT_MAX_PIXELS", default=4096 * 4096)
ATTACHMENT_READ_TIMEOUT_SECONDS = env.float("ATTACHMENT_READ_TIMEOUT_SECONDS", default=20)
DISCORD_CDN_HOSTS = env.list("DISCORD_CDN_HOSTS", default=["cdn.discordapp.com", "media.discordapp.net"])
# Seconds one image may take at the backend (each OpenAI attempt, and all attempts together).
GENERATION_TIMEOUT_SECONDS = env.float("GENERATION_TIMEOUT_SECONDS", default=180)
# Seconds a request may wait in line; with the timeout above it stays inside Discord's 15-minute token.
GENERATION_QUEUE_TIMEOUT_SECONDS = env.float("GENERATION_QUEUE_TIMEOUT_SECONDS", default=600)
# The bot's sweep refunds generations still in flight after this many seconds (a crashed process's).
GENERATION_STALE_SECONDS = env.int("GENERATION_STALE_SECONDS", default=1800)
GENERATION_SWEEP_INTERVAL_SECONDS = env.int("GENERATION_SWEEP_INTERVAL_SECONDS", default=300)
# Retries of the openai client on 408/409/429/5xx, timeouts and connection errors.
OPENAI_MAX_RETRIES = env.int("OPENAI_MAX_RETRIES", default=2)
# The spend guard: once the image service's recorded charges for generations requested today (UTC) reach this
# many US dollars, new /generate requests are refused before anything is charged. Empty: no guard.
_budget = env.str("IMAGE_SPEND_DAILY_BUDGET_USD", default="").strip()
try:
    IMAGE_SPEND_DAILY_BUDGET_USD = Decimal(_budget) if _budget else None
except InvalidOperation:
    raise ImproperlyConfigured("IMAGE_SPEND_DAILY_BUDGET_USD must be a number of dollars, e.g. 25 or 12.50.") from None
if IMAGE_SPEND_DAILY_BUDGET_USD is not None and not (IMAGE_SPEND_DAILY_BUDGET_USD >= 0):
    raise ImproperlyConfigured("IMAGE_SPEND_DAILY_BUDGET_USD must not be negative (leave it empty for no guard).")
# Seconds the placeholder backend pretends to work (for demos and the concurrency bench).
PLACEHOLDER_DELAY_SECONDS = env.float("PLACEHOLDER_DELAY_SECONDS", default=0)

# --- Bot process: lease, health, fair line ----------------------------------------------------------------
# Each `runbot` renews its lease row every BOT_HEARTBEAT_SECONDS; a process silent for BOT_LEASE_SECONDS is
# presumed dead, and another process takes over the bot and settles its generations.
BOT_HEARTBEAT_SECONDS = env.float("BOT_HEARTBEAT_SECONDS", default=10)
BOT_LEASE_SECONDS = env.float("BOT_LEASE_SECONDS", default=60)
# On SIGTERM, images already being made get this long to finish before they are refunded (fits ECS's 30 s).
BOT_SHUTDOWN_GRACE_SECONDS = env.float("BOT_SHUTDOWN_GRACE_SECONDS", default=20)
# Touched while the bot process is healthy; `python -m discordbot.health` checks its age (the container check).
BOT_HEALTH_FILE = env.str("BOT_HEALTH_FILE", default=os.path.join(tempfile.gettempdir(), "imagecredits-bot.health"))
# Seconds an image upload to Discord may take; a process uploads only while its lease outlasts this.
DISCORD_UPLOAD_TIMEOUT_SECONDS = env.float("DISCORD_UPLOAD_TIMEOUT_SECONDS", default=30)
# Threads the bot reaches the database on (discordbot/bridge.py; 0: the default, 8).
BOT_DB_THREADS = env.int("BOT_DB_THREADS", default=0)
# Accepted requests a member may have waiting in line (not yet started); more are refused, uncharged.
MAX_WAITING_PER_MEMBER = env.int("MAX_WAITING_PER_MEMBER", default=3)

# --- Logs and error tracking ----------------------------------------------------------------------------
# `json` (one object a line with a request id; what CloudWatch gets) or `plain` (for a terminal).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "storefront.requestlog.RequestIdFilter"},
        # Request lines without their query strings: success-page session ids and /buy tokens travel there.
        "no_query_strings": {"()": "storefront.logfilters.StripQueryStrings"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"},
        "json": {"()": "storefront.requestlog.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["request_id", "no_query_strings"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "discord": {"level": "WARNING"},
        "django.db.backends": {"level": "WARNING"},
        # stripe-python logs every request's URL at INFO, and a retrieve's URL holds the Checkout Session id.
        "stripe": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},  # the same URLs, at DEBUG, under stripe-python's HTTP client
    },
}

# Error tracking is off unless SENTRY_DSN is set. What it sends leaves out what invariant 8 keeps out of logs:
# no request bodies (webhook payloads, forms), no query strings (session ids, /buy tokens), no cookies, no PII.
SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    import sentry_sdk

    def _sentry_scrub(event: dict, hint: dict) -> dict:
        request = event.get("request") or {}
        for field in ("query_string", "cookies", "data"):
            request.pop(field, None)
        if "url" in request:
            request["url"] = request["url"].split("?", 1)[0]
        return event

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        environment=env.str("SENTRY_ENVIRONMENT", default="production"),
        release=env.str("APP_VERSION", default="") or None,
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,  # locals can hold keys, codes and tokens
        before_send=_sentry_scrub,
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
    )
