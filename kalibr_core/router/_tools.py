"""A small tool registry: paths name tools; the registry holds their OpenAI definitions.

A path's ``tools`` may be OpenAI tool dicts (used as they are) or names resolved here::

    kalibr_core.register_tool("calendar_api", description="Book a slot",
                              parameters={"type": "object", "properties": {...}})

or from a typed function (its signature becomes the JSON schema)::

    @kalibr_core.register_tool
    def lookup_company(domain: str) -> str:
        "Find the company that owns a domain."
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

from pydantic import create_model

from kalibr_core._errors import ConfigurationError, ValidationError

F = TypeVar("F", bound=Callable[..., Any])


class ToolRegistry:
    """Named OpenAI tool definitions (thread-safe)."""

    def __init__(self) -> None:
        self._tools: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def add(
        self,
        name: str,
        *,
        description: str = "",
        parameters: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Register a tool by name; returns its OpenAI definition."""
        if not isinstance(name, str) or not name.strip():
            raise ValidationError("a tool needs a non-empty name", field="name")
        schema = dict(parameters or {"type": "object", "properties": {}})
        if schema.get("type") != "object":
            raise ValidationError(
                f"tool {name!r}: parameters must be a JSON schema of type 'object'",
                field="parameters",
            )
        definition = {
            "type": "function",
            "function": {"name": name, "description": description, "parameters": schema},
        }
        with self._lock:
            self._tools[name] = definition
        return definition

    def add_function(self, fn: Callable[..., Any], name: str | None = None) -> dict[str, Any]:
        """Register a typed function: its signature gives the parameter schema."""
        fields: dict[str, Any] = {}
        for param in inspect.signature(fn).parameters.values():
            annotation = param.annotation if param.annotation is not param.empty else str
            default = param.default if param.default is not param.empty else ...
            fields[param.name] = (annotation, default)
        model = create_model(f"{fn.__name__}_args", **fields)
        schema = model.model_json_schema()
        schema.pop("title", None)
        return self.add(
            name or fn.__name__,
            description=inspect.getdoc(fn) or "",
            parameters=schema,
        )

    def resolve(
        self, tools: Sequence[str], definitions: Sequence[Any] = ()
    ) -> list[dict[str, Any]]:
        """OpenAI tool definitions for a path's tools.

        Raises:
            ConfigurationError: a named tool is neither given as a dict nor registered.
        """
        given = {
            d["function"]["name"]: dict(d)
            for d in definitions
            if isinstance(d, Mapping) and isinstance(d.get("function"), Mapping)
        }
        result = []
        with self._lock:
            for name in tools:
                definition = given.get(name) or self._tools.get(name)
                if definition is None:
                    raise ConfigurationError(
                        f"tool {name!r} is not registered: kalibr_core.register_tool({name!r}, "
                        "description=..., parameters=...) or give the path an OpenAI tool dict"
                    )
                result.append(definition)
        return result


DEFAULT_TOOLS = ToolRegistry()


@overload
def register_tool(name: F) -> F: ...


@overload
def register_tool(
    name: str, *, description: str = "", parameters: Mapping[str, Any] | None = None
) -> dict[str, Any]: ...


def register_tool(
    name: str | F, *, description: str = "", parameters: Mapping[str, Any] | None = None
) -> dict[str, Any] | F:
    """Register a tool in the default registry, by name or as a decorator on a function."""
    if callable(name):
        DEFAULT_TOOLS.add_function(name)
        return name
    return DEFAULT_TOOLS.add(name, description=description, parameters=parameters)
