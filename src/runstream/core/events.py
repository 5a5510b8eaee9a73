"""The event envelope: what a producer publishes and a consumer receives.

On the wire an event is compact UTF-8 JSON with `seq` first, for example
`{"seq":3,"type":"token","payload":{"text":"안녕"},"trace_id":"t1","ts":1733312000.123}`.
Non-ASCII text is kept as is, so it stays readable in `redis-cli`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from runstream.core.errors import InvalidEvent

EventType = Literal["token", "message", "update", "custom", "error", "done", "gap"]
EVENT_TYPES: frozenset[str] = frozenset(get_args(EventType))

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a job.

    `seq` is 0 until the transport assigns it (1, 2, 3, ... per job, no holes). Events a
    consumer makes up itself (`gap`, an idle-timeout `error`) keep seq 0: they are not
    stored, so they have no place in the sequence. `ts` is the producer's wall clock in
    seconds, used to measure latency.
    """

    type: EventType
    payload: Mapping[str, Any] = field(default_factory=dict)
    trace_id: str = ""
    seq: int = 0
    ts: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise InvalidEvent(
                f"type: {self.type!r} is not an event type; use one of {sorted(EVENT_TYPES)}"
            )
        if not isinstance(self.payload, Mapping):
            raise InvalidEvent(f"payload: must be a JSON object, got {type(self.payload).__name__}")
        if not isinstance(self.trace_id, str):
            raise InvalidEvent(f"trace_id: must be a string, got {type(self.trace_id).__name__}")
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < 0:
            raise InvalidEvent(f"seq: must be an integer >= 0, got {self.seq!r}")
        if (
            isinstance(self.ts, bool)
            or not isinstance(self.ts, int | float)
            or not math.isfinite(self.ts)
        ):
            raise InvalidEvent(f"ts: must be a finite number, got {self.ts!r}")

    @property
    def is_stored(self) -> bool:
        """True for events that came from Redis (seq >= 1), false for made-up ones."""
        return self.seq > 0

    def body(self) -> str:
        """The JSON object without `seq`, and without its opening brace.

        The publish scripts prepend `{"seq":N,` once Redis has assigned N.
        """
        return self.to_json(with_seq=False)[1:]

    def to_json(self, *, with_seq: bool = True) -> str:
        fields: dict[str, Any] = {"seq": self.seq} if with_seq else {}
        fields.update(type=self.type, payload=self.payload, trace_id=self.trace_id, ts=self.ts)
        try:
            text: str = _encoder.encode(fields)
            if not text.isascii():
                # Redis gets UTF-8: a lone surrogate would fail there, far from its cause.
                text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise InvalidEvent(_not_utf8(self.trace_id, err)) from err
        except (TypeError, ValueError) as err:
            raise InvalidEvent(f"payload: not serialisable as JSON ({err})") from err
        return text

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        """Decode a stored event; raise `InvalidEvent` naming what is wrong."""
        try:
            fields = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise InvalidEvent(f"not a JSON event ({err})") from err
        if not isinstance(fields, dict):
            raise InvalidEvent("not a JSON event (not an object)")
        missing = {"seq", "type"} - fields.keys()
        if missing:
            raise InvalidEvent(f"{sorted(missing)[0]}: missing from stored event")
        try:
            return cls(
                type=fields["type"],
                payload=fields.get("payload", {}),
                trace_id=fields.get("trace_id", ""),
                seq=fields["seq"],
                ts=fields.get("ts", 0.0),
            )
        except TypeError as err:
            raise InvalidEvent(f"malformed stored event ({err})") from err


def _not_utf8(trace_id: str, err: UnicodeEncodeError) -> str:
    where = "payload"
    try:
        trace_id.encode("utf-8")
    except UnicodeEncodeError:
        where = "trace_id"
    char = err.object[err.start : err.start + 1]
    return (
        f"{where}: holds a lone surrogate (U+{ord(char):04X}), which is not valid UTF-8; "
        "decode bytes with errors='replace' or drop the character"
    )


def gap(first: int, last: int, trace_id: str = "") -> Event:
    """The event a consumer emits in place of the missing seq range `first..last`."""
    return Event("gap", {"first": first, "last": last, "count": last - first + 1}, trace_id)
