"""The HTTP intelligence service: the spec's REST API, multi-tenant, over one Intelligence.

Needs the ``service`` extra (``pip install 'kalibr-core[service]'``). Run it with
``kalibr-core serve``, or mount the app yourself::

    from kalibr_core.service import create_app
    app = create_app(store_url="sqlite:///kalibr.db")

See docs/service.md for the endpoints, authentication and errors.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "kalibr_core.service needs FastAPI and uvicorn: pip install 'kalibr-core[service]'"
    ) from exc

from kalibr_core.service._app import create_app
from kalibr_core.service._auth import KeyAuthenticator
from kalibr_core.service._keys import CreatedKey, create_api_key, hash_key

__all__ = ["CreatedKey", "KeyAuthenticator", "create_api_key", "create_app", "hash_key"]
