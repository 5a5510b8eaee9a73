"""The HTTP API: submit jobs, watch their events as Server-Sent Events."""

from __future__ import annotations

from runstream.api.app import create_app

__all__ = ["create_app"]
