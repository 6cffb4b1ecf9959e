"""Cost estimates: a pricing table for common models, overridable per path.

Prices are USD per million tokens (input, output) as published by the providers; a path can
override with ``{"pricing": {"input_per_1m": ..., "output_per_1m": ...}}`` or a flat
``{"pricing": {"cost_per_call": ...}}``. Unknown models cost 0 (and say so in the debug log):
cost only breaks ties between paths of similar success, so a missing price never changes what
works.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any, Final

logger = logging.getLogger("kalibr_core.router")

# (input, output) USD per 1M tokens; matched by longest prefix of the bare model name.
TOKEN_PRICES: Final[dict[str, tuple[float, float]]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1-mini": (1.10, 4.40),
    "o1": (15.00, 60.00),
    "o3-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-haiku": (0.80, 4.00),
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-opus": (15.00, 75.00),
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-1.5-pro": (1.25, 5.00),
    "gemini-1.5-flash": (0.075, 0.30),
    "deepseek-chat": (0.27, 1.10),
    "deepseek-coder": (0.27, 1.10),
    "deepseek-reasoner": (0.55, 2.19),
}

# Audio: per million characters (speech) and per minute (transcription).
SPEECH_PRICES_PER_1M_CHARS: Final[dict[str, float]] = {
    "tts-1-hd": 30.00,
    "tts-1": 15.00,
    "gpt-4o-mini-tts": 12.00,
    "eleven_": 180.00,
    "aura-": 15.00,
}
TRANSCRIPTION_PRICES_PER_MINUTE: Final[dict[str, float]] = {
    "whisper-1": 0.006,
    "gpt-4o-transcribe": 0.006,
    "gpt-4o-mini-transcribe": 0.003,
    "nova-": 0.0043,
}


def _bare(model: str) -> str:
    return model.rsplit("/", 1)[-1].lower()


def _longest_prefix(table: Mapping[str, Any], model: str) -> Any:
    name = _bare(model)
    matches = [key for key in table if name.startswith(key)]
    return table[max(matches, key=len)] if matches else None


@functools.lru_cache(maxsize=1024)
def _token_prices(model: str) -> tuple[float, float] | None:
    # Every routed call prices its model: scanning the table each time cost more than the rest
    # of the estimate. The table is a constant, so a model's row never changes.
    prices: tuple[float, float] | None = _longest_prefix(TOKEN_PRICES, model)
    return prices


def token_cost(
    model: str,
    input_tokens: int,
    output_tokens: int,
    pricing: Mapping[str, Any] | None = None,
) -> float:
    """Estimated USD cost of a call from its token usage."""
    if pricing:
        if "cost_per_call" in pricing:
            return float(pricing["cost_per_call"])
        return (
            input_tokens * float(pricing.get("input_per_1m", 0.0))
            + output_tokens * float(pricing.get("output_per_1m", 0.0))
        ) / 1e6
    prices = _token_prices(model)
    if prices is None:
        logger.debug("no price known for %s; counting its cost as 0", model)
        return 0.0
    return (input_tokens * float(prices[0]) + output_tokens * float(prices[1])) / 1e6


def speech_cost(model: str, characters: int, pricing: Mapping[str, Any] | None = None) -> float:
    """Estimated USD cost of synthesising ``characters`` characters."""
    if pricing and "cost_per_call" in pricing:
        return float(pricing["cost_per_call"])
    price = _longest_prefix(SPEECH_PRICES_PER_1M_CHARS, model)
    return 0.0 if price is None else characters * float(price) / 1e6


def transcription_cost(
    model: str, seconds: float | None, pricing: Mapping[str, Any] | None = None
) -> float:
    """Estimated USD cost of transcribing ``seconds`` of audio (0 when unknown)."""
    if pricing and "cost_per_call" in pricing:
        return float(pricing["cost_per_call"])
    price = _longest_prefix(TRANSCRIPTION_PRICES_PER_MINUTE, model)
    return 0.0 if price is None or seconds is None else float(price) * seconds / 60.0
