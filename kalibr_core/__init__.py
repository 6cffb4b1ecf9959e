"""kalibr-core: self-hostable, outcome-based routing for LLM agents.

Declare a goal and its paths; every decision is a Thompson-sampling draw over the outcomes
reported so far, so traffic shifts to what works and away from what degrades.

Example:
    >>> import kalibr_core
    >>> intel = kalibr_core.configure(store=":memory:")
    >>> _ = kalibr_core.register_path("extract_company", "gpt-4o")
    >>> decision = kalibr_core.decide("extract_company")
    >>> kalibr_core.report_outcome(decision["trace_id"], "extract_company", success=True)["status"]
    'accepted'
"""

from __future__ import annotations

from kalibr_core._api import (
    configure,
    decide,
    disable_path,
    enable_path,
    flush,
    get_alternative,
    get_exploration_config,
    get_insights,
    get_intelligence,
    get_policy,
    get_stats,
    list_paths,
    register_path,
    report_outcome,
    set_exploration_config,
    update_outcome,
)
from kalibr_core._domain import FAILURE_CATEGORIES, PathSpec, normalise_path
from kalibr_core._errors import (
    AuthenticationError,
    ConfigurationError,
    ContextExceededError,
    EmptyResponseError,
    IntelligenceUnavailableError,
    InvalidFailureCategoryError,
    KalibrError,
    NoPathAvailableError,
    NotFoundError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    StoreError,
    ValidationError,
)
from kalibr_core._intelligence import Intelligence
from kalibr_core._outbox import Outbox
from kalibr_core._remote import RemoteBudget, RemoteIntelligence
from kalibr_core._version import __version__
from kalibr_core.engine import EngineTuning, ExplorationConfig

__all__ = [
    "FAILURE_CATEGORIES",
    "AuthenticationError",
    "ConfigurationError",
    "ContextExceededError",
    "EmptyResponseError",
    "EngineTuning",
    "ExplorationConfig",
    "Intelligence",
    "IntelligenceUnavailableError",
    "InvalidFailureCategoryError",
    "KalibrError",
    "NoPathAvailableError",
    "NotFoundError",
    "Outbox",
    "PathSpec",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitedError",
    "RemoteBudget",
    "RemoteIntelligence",
    "StoreError",
    "ValidationError",
    "__version__",
    "configure",
    "decide",
    "disable_path",
    "enable_path",
    "flush",
    "get_alternative",
    "get_exploration_config",
    "get_insights",
    "get_intelligence",
    "get_policy",
    "get_stats",
    "list_paths",
    "normalise_path",
    "register_path",
    "report_outcome",
    "set_exploration_config",
    "update_outcome",
]
