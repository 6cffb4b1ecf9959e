"""The dependencies every route shares: the served Intelligence and the request's tenant.

Both are coroutines, so FastAPI resolves them in the event loop: a plain function dependency
would cost a trip through the thread pool per dependency and request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kalibr_core._intelligence import Intelligence
from kalibr_core.service._auth import authenticate


async def served_intelligence(request: Request) -> Intelligence:
    """FastAPI dependency: the app's Intelligence."""
    intelligence: Intelligence = request.app.state.intelligence
    return intelligence


Intel = Annotated[Intelligence, Depends(served_intelligence)]
Tenant = Annotated[str, Depends(authenticate)]
