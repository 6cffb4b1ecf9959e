"""``kalibr-core sim``: run the provider simulator in the foreground.

The project's CLI calls :func:`run` with the arguments after ``sim``.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from kalibr_core._errors import ValidationError
from kalibr_core.simulator._scripts import ModelScript
from kalibr_core.simulator._server import ProviderSimulator, _is_loopback

__all__ = ["load_config", "run"]

logger = logging.getLogger("kalibr_core.simulator")


def load_config(path: str | Path) -> tuple[dict[str, ModelScript], ModelScript | None]:
    """Read model scripts from a JSON file.

    The file is either ``{"models": {name: script, ...}, "default": script}`` or directly
    ``{name: script, ...}``; a script is an object with :class:`ModelScript` keys, e.g.
    ``{"accuracy": {"step": {"at": 50, "before": 0.95, "after": 0.3}}, "rate_limit": 0.05}``.

    Args:
        path: The JSON file.

    Returns:
        The scripts by model name, and the default script (``None`` when not given).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValidationError(f"cannot read the config {path}: {exc}", field="config") from exc
    except ValueError as exc:
        raise ValidationError(
            f"the config {path} is not valid JSON: {exc}", field="config"
        ) from exc
    if not isinstance(data, Mapping):
        raise ValidationError(f"the config {path} must be a JSON object", field="config")
    models_part = data.get("models", data) if "models" in data else data
    default_part = data.get("default") if "models" in data else None
    if not isinstance(models_part, Mapping):
        raise ValidationError("'models' must be an object of model scripts", field="config")
    scripts: dict[str, ModelScript] = {}
    for name, script in models_part.items():
        try:
            scripts[str(name)] = ModelScript.from_json(script)
        except ValueError as exc:
            raise ValidationError(f"model {name!r}: {exc}", field="config") from exc
    default = ModelScript.from_json(default_part) if default_part is not None else None
    return scripts, default


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kalibr-core sim",
        description="Run the offline provider simulator (OpenAI, Anthropic, Hugging Face).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any)")
    parser.add_argument("--config", help="JSON file with model scripts")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--no-auth", action="store_true", help="accept requests without an API key")
    return parser


def run(argv: list[str] | None = None, *, stop: threading.Event | None = None) -> int:
    """Serve until interrupted (Ctrl-C) or until ``stop`` is set.

    Args:
        argv: The arguments after ``sim`` (``None`` reads ``sys.argv``).
        stop: An event that ends the server when set (for embedding and tests).

    Returns:
        The process exit code: 0 after a clean stop, 2 for bad arguments.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    if not _is_loopback(args.host):
        print(f"refusing to bind {args.host!r}: the simulator only listens on loopback addresses")
        return 2
    try:
        scripts, default = load_config(args.config) if args.config else ({}, None)
        sim = ProviderSimulator(
            models=scripts,
            seed=args.seed,
            host=args.host,
            port=args.port,
            default_script=default,
            require_auth=not args.no_auth,
        )
        sim.start()
    except (ValueError, OSError) as exc:
        print(f"cannot start the simulator: {exc}")
        return 2
    print(f"kalibr-core provider simulator on {sim.base_url}", flush=True)
    print(f"  OpenAI:       base_url={sim.openai_base_url}", flush=True)
    print(f"  Anthropic:    base_url={sim.anthropic_base_url}", flush=True)
    print(f"  HuggingFace:  base_url={sim.hf_base_url}", flush=True)
    print(f"                model URLs: {sim.hf_base_url}/models/<model>[/pipeline/<task>]")
    print(f"  models:       {', '.join(sim.models) or '(any name; default script)'}", flush=True)
    waiter = stop or threading.Event()
    try:
        while not waiter.wait(0.5):
            pass
    except KeyboardInterrupt:
        logger.info("interrupted")
    finally:
        sim.stop()
    return 0
