"""Core: the event envelope, the transport contract, settings, errors and key names."""

from runstream.core.errors import (
    ConfigError,
    InvalidEvent,
    InvalidJobId,
    JobNotFound,
    ReaderConflict,
    RunstreamError,
    TransportUnavailable,
)
from runstream.core.events import EVENT_TYPES, Event, EventType
from runstream.core.keys import KeySpace, validate_job_id
from runstream.core.settings import Settings, load_settings
from runstream.core.transport import Transport, open_transport

__all__ = [
    "EVENT_TYPES",
    "ConfigError",
    "Event",
    "EventType",
    "InvalidEvent",
    "InvalidJobId",
    "JobNotFound",
    "KeySpace",
    "ReaderConflict",
    "RunstreamError",
    "Settings",
    "Transport",
    "TransportUnavailable",
    "load_settings",
    "open_transport",
    "validate_job_id",
]
