"""Types shared by the API tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from runstream.api.services import Services
from runstream.core.settings import Settings


@dataclass
class Api:
    """One app under test: its HTTP client and the objects its lifespan opened."""

    client: httpx.AsyncClient
    services: Services

    @property
    def settings(self) -> Settings:
        return self.services.settings


MakeApi = Callable[..., Awaitable[Api]]
