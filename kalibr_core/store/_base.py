"""The store interface every backend implements (SqliteStore is the reference).

A store persists metadata only: paths, exploration configs, decisions, outcomes, corrections
and per-path sufficient statistics, never prompts or completions. The contract that matters
for consistency:

* ``record_outcomes`` gives each outcome a ``seq`` from one increasing sequence (the order
  every process folds), sets ``prev_seq`` (the scope's previous outcome) and updates the path's
  statistics as commutative increments in the same transaction; an ``outcome_id`` already
  stored is acknowledged, not stored again (``duplicate``).
* ``update_latest_outcome`` rewrites one outcome and logs the change of its learned value as a
  correction (with its own ``seq``) in the same transaction.
* ``set_epoch`` restarts a path's effective statistics at a seq, recomputed in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from kalibr_core._domain import PathSpec
from kalibr_core.store._records import (
    ApiKeyRecord,
    CorrectionRecord,
    DecisionRecord,
    OutcomeRecord,
    PathRecord,
    PathTotals,
)


@runtime_checkable
class Store(Protocol):
    """Persistence for one or more tenants (see the module docstring for the contract)."""

    def close(self) -> None:
        """Release connections (idempotent)."""

    def health(self) -> dict[str, Any]:
        """``{"status": "healthy" | "unhealthy", "backend": ..., ...}``."""

    def register_path(self, tenant: str, spec: PathSpec) -> tuple[PathRecord, bool]:
        """Insert the path if new; (record, created). Keeps the enabled flag of a known path."""

    def set_path_enabled(self, tenant: str, path_id: str, enabled: bool) -> PathRecord | None:
        """Enable or soft-disable a path; None if unknown."""

    def get_path(self, tenant: str, path_id: str) -> PathRecord | None:
        """One path, or None."""

    def list_paths(
        self, tenant: str, goal: str | None = None, *, include_disabled: bool = False
    ) -> list[PathRecord]:
        """Paths in registration order."""

    def list_goals(self, tenant: str) -> list[str]:
        """Goals with paths or outcomes."""

    def get_config(self, tenant: str, goal: str) -> dict[str, Any] | None:
        """The goal's exploration config, or None."""

    def set_config(self, tenant: str, goal: str, config: dict[str, Any]) -> None:
        """Store the goal's exploration config."""

    def record_decisions(self, decisions: Iterable[DecisionRecord]) -> None:
        """Persist decisions (idempotent per trace id)."""

    def get_decision(self, tenant: str, trace_id: str) -> DecisionRecord | None:
        """The decision that issued a trace id, or None."""

    def record_outcomes(self, outcomes: Sequence[OutcomeRecord]) -> list[int]:
        """Persist outcomes durably; returns their seqs."""

    def update_latest_outcome(
        self,
        tenant: str,
        goal: str,
        trace_id: str,
        apply: Callable[[OutcomeRecord], OutcomeRecord | None],
    ) -> tuple[OutcomeRecord, OutcomeRecord | None, CorrectionRecord | None] | None:
        """Atomically rewrite the latest outcome of (trace_id, goal)."""

    def outcomes_since(
        self, tenant: str, goal: str, pipeline_id: str, seq: int, limit: int = 10_000
    ) -> list[OutcomeRecord]:
        """A scope's outcomes after a seq, in order."""

    def corrections_since(
        self, tenant: str, goal: str, pipeline_id: str, seq: int
    ) -> list[CorrectionRecord]:
        """A scope's corrections after a seq, in order."""

    def set_epoch(
        self, tenant: str, goal: str, pipeline_id: str, path_id: str, epoch_seq: int
    ) -> None:
        """Restart a path's effective statistics at ``epoch_seq``."""

    def load_scope(
        self, tenant: str, goal: str, pipeline_id: str, history: int
    ) -> tuple[list[PathTotals], int, int]:
        """Per-path statistics of a scope and its outcome and correction cursors."""

    def outcomes_in_window(
        self, tenant: str, goal: str | None, since: float
    ) -> list[OutcomeRecord]:
        """Outcomes created at or after ``since``."""

    def count_outcomes(self, tenant: str, goal: str | None = None) -> int:
        """How many outcomes are stored."""

    def create_api_key(
        self, tenant: str, key_id: str, key_hash: str, name: str | None
    ) -> ApiKeyRecord:
        """Store a new key's hash for a tenant."""

    def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        """Keys (of one tenant if given), oldest first, revoked ones included."""

    def revoke_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """Revoke a key (idempotent); None if unknown."""

    def tenant_for_key_hash(self, key_hash: str) -> str | None:
        """The tenant of an active key with this hash, or None (unknown or revoked)."""
