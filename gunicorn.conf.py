"""gunicorn's configuration for the web container; gunicorn reads ./gunicorn.conf.py from its working directory.

Every value can be tuned from the environment (see .env.example), but the config refuses to start a server whose
timeouts contradict each other:

- The worker timeout must be longer than the worst Stripe call (STRIPE_TIMEOUT_SECONDS for each of
  1 + STRIPE_MAX_NETWORK_RETRIES attempts, plus stripe-python's back-off between them). Otherwise a slow Stripe
  kills the worker in the middle of a checkout.
- The graceful timeout (how long in-flight requests may finish after SIGTERM) must fit inside the container's
  stop timeout (CONTAINER_STOP_TIMEOUT, the task definition's `stopTimeout`), or ECS sends SIGKILL first.

Threads (gthread, WEB_CONCURRENCY x WEB_THREADS = 16 requests at once by default) keep slow Stripe calls from
occupying every worker: `/healthz` is still answered, so ECS does not kill a task that is merely waiting on Stripe.

Stripe webhooks are acknowledged once stored and processed by a pool of STRIPE_EVENT_THREADS threads in each
worker (storefront/eventqueue.py), started here in `post_worker_init` and stopped in `worker_exit`; the claim's
lease (STRIPE_EVENT_LEASE_SECONDS) must outlast a handler's worst case (two Stripe calls at their worst).
"""

import math
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "storefront.settings")
from django.conf import settings  # noqa: E402  (the Stripe budget and log format come from the one settings module)

# stripe-python sleeps between retries: 0.5 s doubling, at most 5 s (HTTPClient.MAX_DELAY) each time.
STRIPE_MAX_RETRY_DELAY = 5
stripe_budget = settings.STRIPE_TIMEOUT_SECONDS * (settings.STRIPE_MAX_NETWORK_RETRIES + 1) + (
    STRIPE_MAX_RETRY_DELAY * settings.STRIPE_MAX_NETWORK_RETRIES
)

bind = [os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))
# A gthread worker accepts up to worker_connections clients and queues them for its threads; with the default
# (1000) a worker whose threads all wait on Stripe would still accept the health check and queue it behind them.
# Capped at its thread count, a busy worker leaves new connections to a worker with a free thread.
worker_connections = threads
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "0")) or math.ceil(stripe_budget) + 15
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "0")) or math.ceil(stripe_budget) + 5
# Seconds between SIGTERM and SIGKILL that the container gets (ECS `stopTimeout`); empty outside a container.
container_stop_timeout = int(os.environ.get("CONTAINER_STOP_TIMEOUT", "0"))

if timeout <= stripe_budget:
    sys.exit(
        f"gunicorn.conf.py: GUNICORN_TIMEOUT={timeout}s is not longer than the worst Stripe call "
        f"({stripe_budget:g}s = STRIPE_TIMEOUT_SECONDS x (STRIPE_MAX_NETWORK_RETRIES + 1) + back-off): a slow Stripe "
        "would kill workers mid-checkout. Raise GUNICORN_TIMEOUT or lower the Stripe settings."
    )
if settings.STRIPE_EVENT_LEASE_SECONDS <= 2 * stripe_budget:
    sys.exit(
        f"gunicorn.conf.py: STRIPE_EVENT_LEASE_SECONDS={settings.STRIPE_EVENT_LEASE_SECONDS}s is not longer than two "
        f"worst Stripe calls (2 x {stripe_budget:g}s): a slow Stripe would let a second processor take over an event "
        "still being processed. Raise STRIPE_EVENT_LEASE_SECONDS or lower the Stripe settings."
    )
if container_stop_timeout and graceful_timeout + 5 > container_stop_timeout:
    sys.exit(
        f"gunicorn.conf.py: GUNICORN_GRACEFUL_TIMEOUT={graceful_timeout}s (+5s to exit) does not fit the container's "
        f"stop timeout CONTAINER_STOP_TIMEOUT={container_stop_timeout}s: requests in flight would be SIGKILLed. "
        "Raise the task definition's stopTimeout (and CONTAINER_STOP_TIMEOUT with it; ECS allows up to 120s)."
    )

# Honour X-Forwarded-Proto only from the load balancer's addresses (CIDRs allowed). Django trusts gunicorn's
# verdict (no SECURE_PROXY_SSL_HEADER), so a client that reaches the port directly cannot claim HTTPS.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# A read-only root filesystem: heartbeat files in memory, and no control socket (it would go under $HOME).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
control_socket_disable = True

# Requests are logged by Django (storefront.requestlog, with their id and without query strings), not here.
accesslog = None
errorlog = "-"
if settings.LOG_FORMAT == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "storefront.requestlog.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
        "loggers": {"gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False}},
    }


def post_worker_init(worker) -> None:
    """Each worker runs the Stripe events it stores, and polls for due, retried and abandoned ones."""
    from storefront.eventqueue import processor_start

    processor_start()


def worker_exit(server, worker) -> None:
    """Events already running finish; queued ones stay stored for the next worker's poll."""
    from storefront.eventqueue import processor_stop

    processor_stop()
