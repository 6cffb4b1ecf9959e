"""Group commit, shared by the stores: concurrent callers of ``record_outcomes`` share writes.

The first caller to find no write under way leads: it writes everything queued (its own
outcomes and those of callers arriving meanwhile), batch after batch until the queue is empty,
and wakes each caller whose outcomes it wrote. So threads or tasks reporting at once pay for one
commit instead of one each, and each caller still returns only once its outcomes are durable
(or raises its own error).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import ClassVar

from kalibr_core._errors import StoreError
from kalibr_core.store._records import OutcomeRecord

# How long a gathering leader waits for the callers it expects (as many as shared its last
# commit) before it writes. Threads reporting together come back within tens of microseconds
# of being woken; without the wait, the first one back wrote alone and the rest waited for it,
# and 4 threads made commits of 1.5 outcomes on average (3 to 4 with it). A lone caller
# never waits: its commits hold one caller each.
_GATHER_S = 0.0002


class _Job:
    """Outcomes waiting for a group commit, and how it went.

    ``done`` is set by the leader once the job is written; only a caller that waits for
    another's commit has one (an event costs a lone caller about a tenth of its report).
    """

    __slots__ = ("done", "error", "outcomes")

    def __init__(self, outcomes: list[OutcomeRecord]) -> None:
        self.outcomes = outcomes
        self.done: threading.Event | None = None
        self.error: StoreError | None = None


class GroupCommit:
    """A store's group commit (a mixin): :meth:`_commit` queues, leads or waits.

    A store implements :meth:`_write_outcomes` (one transaction for a batch of jobs, setting
    each outcome's ``seq``), may set ``_gathers`` (the leader waits up to ``_GATHER_S`` for as
    many callers as shared its last commit) and may override :meth:`_retry_alone` (after a
    shared batch failed with this error, write each caller's outcomes alone so that one bad
    outcome fails only its own call).
    """

    _gathers: ClassVar[bool] = False
    _queue: list[_Job]
    _queue_lock: threading.Lock
    _queued: threading.Condition
    _writing: bool
    _siblings: int

    def _init_group_commit(self) -> None:
        self._queue = []
        self._queue_lock = threading.Lock()
        self._queued = threading.Condition(self._queue_lock)
        self._writing = False
        self._siblings = 1  # callers the last commit held: whom a gathering leader waits for

    def _write_outcomes(self, jobs: Sequence[_Job]) -> None:
        raise NotImplementedError

    def _retry_alone(self, error: StoreError) -> bool:
        return False

    def _commit(self, outcomes: Sequence[OutcomeRecord]) -> list[int]:
        """Store ``outcomes`` in a commit shared with concurrent callers; their seqs."""
        job = _Job(list(outcomes))
        with self._queue_lock:
            self._queue.append(job)
            leader = not self._writing
            self._writing = self._writing or leader
            if not leader:
                job.done = threading.Event()  # before the leader can take the job
            if self._gathers and len(self._queue) >= self._siblings:
                self._queued.notify()  # a leader gathering callers may go
        if job.done is not None:
            job.done.wait()
        else:
            if self._gathers:
                with self._queue_lock:
                    self._queued.wait_for(lambda: len(self._queue) >= self._siblings, _GATHER_S)
            self._lead()
        if job.error is not None:
            raise job.error
        return [o.seq for o in job.outcomes]

    def _lead(self) -> None:
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._writing = False
                    return
                if self._gathers:
                    # Expect as many next time; a commit alone lowers the expectation by one,
                    # so that callers who stopped reporting are soon no longer waited for.
                    self._siblings = len(batch) if len(batch) > 1 else max(1, self._siblings - 1)
            try:
                self._write_outcomes(batch)
            except StoreError as exc:
                for queued in batch:
                    queued.error = exc
                if len(batch) > 1 and self._retry_alone(exc):
                    for queued in batch:
                        queued.error = None
                        try:
                            self._write_outcomes([queued])
                        except StoreError as alone:
                            queued.error = alone
            finally:
                for queued in batch:
                    if queued.done is not None:
                        queued.done.set()
