"""Delivery of the remote client's outbox: in order, at least once, backing off while down.

:class:`OutboxSender` sends the entries of an :class:`~kalibr_core.Outbox` to the
intelligence service oldest first, and deletes an entry only once the service acknowledged it
(a 2xx whose body echoes the entry: a proxy's 200 page is not an acknowledgement). A failure
stops the round (so nothing overtakes an entry that is still waiting) and opens a back-off
window in :class:`ServiceHealth`, which the client's decisions consult too: while it is open
they fail open at once instead of paying their budget again.

What a status means:

* 2xx with an acknowledgement: delivered, the entry is deleted.
* 401/403 (the key), 408/425/429 (slow down), 5xx, no answer: retried later; 401/403 are
  logged as errors.
* any other 4xx: the service says the request is invalid; the entry moves to the dead letters
  and an error is logged. It is never dropped silently.
* 500 (an unexpected error of the service, unlike 503, its store being unavailable) answered
  to the same entry :data:`POISON_ATTEMPTS` times (by this process; outages in between do not
  count): the entry is taken for a poison message and moves to the dead letters too, so that it
  cannot hold up the queue behind it forever.

A background thread sends what is queued (woken at once by new entries, polling every second
for entries other processes queued); callers that want an answer (``wait=True``) and ``flush()``
drain in their own thread, one drainer at a time.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from kalibr_core._outbox import Outbox, OutboxEntry, lease_owner

logger = logging.getLogger("kalibr_core.remote")

ENDPOINTS: dict[str, str] = {
    "report": "/api/v1/intelligence/report-outcome",
    "update": "/api/v1/intelligence/update-outcome",
    "register": "/api/v1/routing/paths",
}
_RETRYABLE = frozenset({401, 403, 408, 425, 429})
_LEASE_TTL_S = 10.0
POISON_ATTEMPTS = 50
"""An entry answered HTTP 500 this many times moves to the dead letters (see _deliver)."""
_IDLE_POLL_S = 1.0

Post = Callable[[str, Mapping[str, Any], float], httpx.Response]


class UnreachableError(Exception):
    """The service did not answer (connection refused, timeout, protocol error)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The service's answer to an entry it rejected as invalid."""

    status: int
    message: str


def retryable(status: int) -> bool:
    """Whether an error status is worth retrying (see the module docstring)."""
    return status in _RETRYABLE or status >= 500


def error_message(response: httpx.Response) -> str:
    """The service's error message (``{"error": {"message"}}``), else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if "detail" in body:
            return str(body["detail"])[:300]
    return str(body)[:300]


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The body as a JSON object, or None."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class ServiceHealth:
    """Whether to try the service now: a failure opens a back-off window (a circuit breaker).

    The window starts at ``retry_initial`` seconds and doubles (with jitter) up to
    ``retry_max`` while failures continue; any answer closes it. The transition from up to
    down is logged once (an error for an auth failure), and the way back once.
    """

    def __init__(self, retry_initial: float, retry_max: float, where: str) -> None:
        self._initial = retry_initial
        self._max = retry_max
        self._where = where
        self._lock = threading.Lock()
        self._delay = retry_initial
        self._retry_at = 0.0
        self.down_since: float | None = None
        self.reason = ""

    def available(self) -> bool:
        """False while backing off after a failure."""
        return time.monotonic() >= self._retry_at

    def wait_s(self) -> float:
        """Seconds until the next attempt is due."""
        return max(0.0, self._retry_at - time.monotonic())

    def failure(self, reason: str, *, auth: bool = False) -> None:
        """Record a failure."""
        with self._lock:
            now = time.monotonic()
            first = self.down_since is None
            if first:
                self.down_since = now
                self._delay = self._initial
            else:
                self._delay = min(self._max, self._delay * 2)
            self.reason = reason
            self._retry_at = now + self._delay * random.uniform(0.8, 1.2)
        if first:
            logger.log(
                logging.ERROR if auth else logging.WARNING,
                "the intelligence service %s is unavailable (%s): decisions fail open, "
                "outcomes wait in the outbox and are replayed when it answers",
                self._where,
                reason,
            )

    def success(self) -> bool:
        """Record an answer; True if the service was down until now."""
        if self.down_since is None:
            return False
        with self._lock:
            since, self.down_since = self.down_since, None
            self._retry_at = 0.0
            self._delay = self._initial
        if since is None:
            return False
        logger.warning(
            "the intelligence service %s answers again after %.1f s; replaying the outbox",
            self._where,
            time.monotonic() - since,
        )
        return True


class OutboxSender:
    """Sends an outbox to the service (see the module docstring). Thread-safe.

    Args:
        outbox: The outbox to deliver.
        post: ``post(path, body, timeout_s)``: one HTTP POST; raises UnreachableError when
            the service does not answer.
        health: The client's back-off state, shared with its decisions.
        report_s: Time limit of one delivery, and how long :meth:`wait_for` waits.
        retry_initial: First pause of :meth:`drain_until` between rounds (doubling).
        retry_max: Longest pause of :meth:`drain_until`.
        idle: Called by the background thread after each round (snapshot refreshes).
    """

    def __init__(
        self,
        outbox: Outbox,
        post: Post,
        health: ServiceHealth,
        *,
        report_s: float,
        retry_initial: float,
        retry_max: float,
        idle: Callable[[], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self._post = post
        self._health = health
        self._report_s = report_s
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._idle = idle
        self._owner = lease_owner()
        self._lease_until = 0.0
        self._drain_lock = threading.Lock()
        self._server_errors: dict[int, int] = {}  # HTTP 500s per entry (under _drain_lock)
        self._settled: dict[str, dict[str, Any] | Rejected] = {}
        self._waiting: set[str] = set()
        self._settled_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()

    # -- the background thread -----------------------------------------------------------------
    def kick(self) -> None:
        """Wake the background thread (started on first use)."""
        if self._stopping.is_set():
            return
        if self._worker is None:
            with self._worker_lock:
                if self._worker is None:
                    thread = threading.Thread(target=self._run, name="kalibr-outbox", daemon=True)
                    self._worker = thread
                    thread.start()
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._health.wait_s() or _IDLE_POLL_S)
            self._wake.clear()
            if self._stopping.is_set():
                return
            if not self._health.available():
                continue
            try:
                self._drain(None, background=True)
                if self._idle is not None:
                    self._idle()
            except Exception:  # keep running: what was not delivered stays queued
                if self._stopping.is_set():
                    return
                logger.exception("the outbox sender failed; retrying")
                self._stopping.wait(1.0)

    def stop(self, deadline: float) -> None:
        """Stop the background thread (waiting for it until ``deadline``, monotonic)."""
        self._stopping.set()
        self._wake.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=max(0.0, deadline - time.monotonic()))

    def release(self) -> None:
        """Give the outbox's sender lease up, so another process may send at once."""
        try:
            self.outbox.release_lease(self._owner)
        except Exception:  # the lease expires by itself
            logger.debug("releasing the outbox lease failed", exc_info=True)

    # -- draining ------------------------------------------------------------------------------
    def wait_for(self, key: str) -> dict[str, Any] | Rejected | None:
        """Deliver the outbox up to ``key`` within ``report_s``; the service's answer.

        Returns the acknowledgement (``{}`` if another thread or process delivered it), the
        rejection, or None if it is still queued (the service is down or slow).
        """
        if not self._health.available():
            return None  # known down: the entry is safe on disk, do not make the caller wait
        deadline = time.monotonic() + self._report_s
        with self._settled_lock:
            self._waiting.add(key)
        try:
            while True:
                self._drain(deadline)
                with self._settled_lock:
                    settled = self._settled.pop(key, None)
                if settled is not None:
                    return settled
                if not self.outbox.contains(key):
                    return {}
                # Still queued: the service failed, or another process holds the lease.
                if not self._health.available() or time.monotonic() >= deadline:
                    return None
                time.sleep(0.02)
        finally:
            with self._settled_lock:
                self._waiting.discard(key)
                self._settled.pop(key, None)

    def drain_until(self, deadline: float) -> int:
        """Deliver until the outbox is empty or ``deadline`` (monotonic); what is left."""
        delay = self._retry_initial
        while True:
            self._drain(deadline)
            left = self.outbox.count()
            now = time.monotonic()
            if not left or now >= deadline:
                return left
            time.sleep(min(delay, deadline - now))
            delay = min(self._retry_max, delay * 2)

    def _drain(self, deadline: float | None, *, background: bool = False) -> None:
        """Deliver in order until the outbox is empty, a delivery fails, or the deadline."""
        timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._drain_lock.acquire(timeout=timeout):
            return
        try:
            while True:
                batch = self.outbox.head(64)
                if not batch:
                    return
                for entry in batch:
                    if background and self._stopping.is_set():
                        return
                    if deadline is not None and time.monotonic() >= deadline:
                        return
                    if not self._hold_lease() or not self._deliver(entry, deadline):
                        return
        finally:
            self._drain_lock.release()

    def _hold_lease(self) -> bool:
        """One process sends a shared outbox at a time, so the queue is delivered in order."""
        now = time.time()
        if now < self._lease_until - _LEASE_TTL_S / 2:
            return True
        held = self.outbox.acquire_lease(self._owner, _LEASE_TTL_S)
        self._lease_until = now + _LEASE_TTL_S if held else 0.0
        return held

    def _deliver(self, entry: OutboxEntry, deadline: float | None) -> bool:
        """Send one entry; False if it must be retried later (it stays queued)."""
        timeout = self._report_s
        if deadline is not None:
            timeout = max(0.05, min(timeout, deadline - time.monotonic()))
        try:
            response = self._post(ENDPOINTS[entry.kind], entry.body, timeout)
        except UnreachableError as exc:
            self._health.failure(str(exc))
            self.outbox.note_failure(entry.id, str(exc))
            return False
        status = response.status_code
        if 200 <= status < 300:
            answer = json_object(response)
            if answer is None or not _acknowledges(entry, answer):
                why = f"HTTP {status} without an acknowledgement of {entry.kind} {entry.key}"
                self._health.failure(why)
                self.outbox.note_failure(entry.id, why)
                return False
            self.outbox.remove(entry.id)
            self._server_errors.pop(entry.id, None)
            self._settle(entry.key, answer)
            if self._health.success():
                self._wake.set()
            return True
        message = error_message(response)
        poisoned = False
        if status == 500:
            count = self._server_errors.get(entry.id, 0) + 1
            self._server_errors[entry.id] = count
            poisoned = count >= POISON_ATTEMPTS
        if poisoned:
            # The service fails on this entry every time it answers: moving it aside lets the
            # queue behind it move (it is kept, and logged, as a rejection).
            message = f"HTTP 500 on each of {POISON_ATTEMPTS} attempts: {message}"
        elif retryable(status):
            self._health.failure(f"HTTP {status}: {message}", auth=status in (401, 403))
            self.outbox.note_failure(entry.id, f"HTTP {status}: {message}")
            return False
        self.outbox.reject(entry, status, message)
        self._server_errors.pop(entry.id, None)
        logger.error(
            "the intelligence service rejected %s %s (trace %s, goal %s) with HTTP %d: %s. "
            "It is kept in the dead letters of %s (Outbox.dead_letters(); "
            "Outbox.requeue_dead_letters() sends them again)",
            entry.kind,
            entry.key,
            entry.body.get("trace_id"),
            entry.body.get("goal"),
            status,
            message,
            self.outbox.path,
        )
        self._settle(entry.key, Rejected(status, message))
        self._health.success()
        return True

    def _settle(self, key: str, result: dict[str, Any] | Rejected) -> None:
        with self._settled_lock:
            if key in self._waiting:
                self._settled[key] = result


def _acknowledges(entry: OutboxEntry, answer: Mapping[str, Any]) -> bool:
    """Whether a 2xx body acknowledges this entry (a proxy's 200 page does not)."""
    if entry.kind == "register":
        return isinstance(answer.get("path_id"), str)
    return answer.get("trace_id") == entry.body.get("trace_id")
