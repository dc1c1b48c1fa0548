"""The Stripe event processor: a pool of threads inside each web worker that runs the events the webhook stored.

Why threads in the web worker, not a process of its own: ECS runs exactly two containers (web and bot). The web
container already has the Stripe key, the email settings and the database, and the webhook request that stored
an event hands its id straight to a thread of the same process, so processing starts within milliseconds with
no polling delay and no third service to deploy, watch and scale. The work is I/O (a Stripe call, an email), so
threads waiting on it cost little CPU; they never hold one of gunicorn's request threads.

Nothing depends on the hand-off: every event is in the database before the webhook answers, and each worker's
poll (every STRIPE_EVENT_POLL_SECONDS) picks up what is due: events whose hand-off was lost (the worker was
killed between the answer and the work), failed events whose retry delay is over, and events whose claim's lease
ran out (the process working on them died). The claim (a conditional UPDATE, storefront.services) makes sure
only one processor in any process runs an event at a time.

Started by gunicorn's `post_worker_init` hook (gunicorn.conf.py) and stopped by `worker_exit`. In any other
process (`make run`'s dev server) it starts on the first webhook. STRIPE_EVENT_THREADS=0 starts none: events then
wait for a process that has them, or for `manage.py processstripeevents` (the test suite runs them that way).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, connections

logger = logging.getLogger(__name__)


class EventProcessor:
    """Runs stored Stripe events on a thread pool; `submit` for a fresh event, a poll for everything else."""

    def __init__(self, *, threads: int, poll_seconds: float) -> None:
        self.threads = threads
        self.poll_seconds = poll_seconds
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stripe-event")
        self._lock = threading.Lock()
        self._queued: set[str] = set()  # submitted and not finished, so the poll does not queue them twice
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="stripe-event-poll", daemon=True)

    def start(self) -> EventProcessor:
        self._poller.start()
        return self

    def submit(self, event_id: str) -> bool:
        with self._lock:
            if self._stopping.is_set() or event_id in self._queued:
                return False
            self._queued.add(event_id)
        try:
            self._pool.submit(self._run, event_id)
        except RuntimeError:  # shut down meanwhile: the event stays stored for another processor
            return False
        return True

    def _run(self, event_id: str) -> None:
        from storefront import webhooks

        close_old_connections()  # what Django does around a request: drop a connection that broke or aged out
        try:
            if not self._stopping.is_set():
                webhooks.process(event_id=event_id)
        except Exception:  # e.g. the database is unreachable: the event is still stored; the poll tries again
            logger.exception("Could not process Stripe event %s; it stays queued.", event_id)
        finally:
            with self._lock:
                self._queued.discard(event_id)
            close_old_connections()

    def poll_once(self) -> int:
        from storefront.services import stripe_events_due

        with self._lock:
            room = self.threads * 4 - len(self._queued)
        if room <= 0:
            return 0
        close_old_connections()
        return sum(self.submit(event_id) for event_id in stripe_events_due(limit=room))

    def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once()
            except Exception:
                logger.exception("The Stripe event poll failed; trying again in %ss.", self.poll_seconds)
            self._stopping.wait(self.poll_seconds)
        connections.close_all()

    def stop(self, *, wait: bool = True) -> None:
        """No new work; events already running finish (those only queued stay in the database for the next poll)."""
        self._stopping.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)


_processor: EventProcessor | None = None
_processor_lock = threading.Lock()


def processor_start() -> EventProcessor | None:
    """This process's processor, started once; None when STRIPE_EVENT_THREADS is 0."""
    global _processor
    with _processor_lock:
        if _processor is None and settings.STRIPE_EVENT_THREADS > 0:
            _processor = EventProcessor(
                threads=settings.STRIPE_EVENT_THREADS, poll_seconds=settings.STRIPE_EVENT_POLL_SECONDS
            ).start()
            logger.info("Stripe event processor started (%s threads).", settings.STRIPE_EVENT_THREADS)
        return _processor


def processor_stop() -> None:
    global _processor
    with _processor_lock:
        processor, _processor = _processor, None
    if processor is not None:
        processor.stop()


def hand_off(event_id: str) -> None:
    """A freshly stored event: run it now on this process's processor (when it has one; the poll does otherwise)."""
    processor = processor_start()
    if processor is not None:
        processor.submit(event_id)
