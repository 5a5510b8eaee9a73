"""The event envelope: validation, the exact wire form, and decoding stored bytes."""

from __future__ import annotations

import pytest

from runstream.core.errors import InvalidEvent
from runstream.core.events import EVENT_TYPES, Event, gap


def test_event_types_are_the_contract_set() -> None:
    assert EVENT_TYPES == {"token", "message", "update", "custom", "error", "done", "gap"}


def test_wire_form_is_compact_utf8_json_with_seq_first() -> None:
    event = Event("token", {"text": "안녕 👍🏽", "n": None}, trace_id="t1", seq=3, ts=1.25)

    assert event.to_json() == (
        '{"seq":3,"type":"token","payload":{"text":"안녕 👍🏽","n":null},"trace_id":"t1","ts":1.25}'
    )
    assert (
        event.body()
        == '"type":"token","payload":{"text":"안녕 👍🏽","n":null},"trace_id":"t1","ts":1.25}'
    )


def test_from_json_inverts_to_json() -> None:
    event = Event("message", {"role": "ai", "parts": [1, 2.5, "x"]}, trace_id="t", seq=9, ts=2.0)

    assert Event.from_json(event.to_json().encode()) == event
    assert Event.from_json(event.to_json()).is_stored is True


def test_made_up_events_have_seq_zero() -> None:
    event = gap(4, 7, trace_id="t")

    assert (event.type, event.seq, event.trace_id, event.is_stored) == ("gap", 0, "t", False)
    assert event.payload == {"first": 4, "last": 7, "count": 4}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "chunk"}, "type: 'chunk' is not an event type; use one of"),
        ({"payload": ["a"]}, "payload: must be a JSON object, got list"),
        ({"payload": "text"}, "payload: must be a JSON object, got str"),
        ({"trace_id": 5}, "trace_id: must be a string, got int"),
        ({"seq": -1}, "seq: must be an integer >= 0, got -1"),
        ({"seq": True}, "seq: must be an integer >= 0, got True"),
        ({"seq": 1.5}, "seq: must be an integer >= 0, got 1.5"),
        ({"ts": float("nan")}, "ts: must be a finite number, got nan"),
        ({"ts": "now"}, "ts: must be a finite number, got 'now'"),
    ],
)
def test_invalid_event_is_refused_naming_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        Event(**{"type": "token", **fields})  # type: ignore[arg-type]

    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"x": float("nan")}, "Out of range float values are not JSON compliant"),
        ({"x": float("inf")}, "Out of range float values are not JSON compliant"),
        ({"x": {1, 2}}, "Object of type set is not JSON serializable"),
        ({"x": object()}, "Object of type object is not JSON serializable"),
    ],
)
def test_unserialisable_payload_is_refused_on_encoding(
    payload: dict[str, object], reason: str
) -> None:
    event = Event("custom", payload)

    with pytest.raises(InvalidEvent) as caught:
        event.to_json()

    assert str(caught.value).startswith(f"payload: not serialisable as JSON ({reason}")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not a JSON event (Expecting value: line 1 column 1 (char 0))"),
        (b"\xff", "not a JSON event ('utf-8' codec can't decode byte 0xff in position 0"),
        (b"[1, 2]", "not a JSON event (not an object)"),
        (b'{"type":"token"}', "seq: missing from stored event"),
        (b'{"seq":1}', "type: missing from stored event"),
        (b'{"seq":1,"type":"nope"}', "type: 'nope' is not an event type"),
        (b'{"seq":"1","type":"token"}', "seq: must be an integer >= 0, got '1'"),
        (b'{"seq":1,"type":"token","payload":[]}', "payload: must be a JSON object, got list"),
        (b'{"seq":1,"type":"token","extra":1}', None),
    ],
)
def test_from_json_names_what_is_wrong(raw: bytes, message: str | None) -> None:
    if message is None:
        assert Event.from_json(raw).seq == 1  # unknown fields are ignored
        return
    with pytest.raises(InvalidEvent) as caught:
        Event.from_json(raw)

    assert str(caught.value).startswith(message)


_SURROGATE_FIX = (
    "which is not valid UTF-8; decode bytes with errors='replace' or drop the character"
)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"payload": {"text": "a\ud800b"}}, "payload: holds a lone surrogate (U+D800), "),
        ({"payload": {"key\udcff": 1}}, "payload: holds a lone surrogate (U+DCFF), "),
        ({"payload": {"deep": [{"x": "\udfff"}]}}, "payload: holds a lone surrogate (U+DFFF), "),
        ({"trace_id": "t\ud801"}, "trace_id: holds a lone surrogate (U+D801), "),
    ],
)
def test_lone_surrogate_is_refused_on_encoding_naming_the_field(
    fields: dict[str, object], message: str
) -> None:
    event = Event(**{"type": "custom", **fields})  # type: ignore[arg-type]

    with pytest.raises(InvalidEvent) as caught:
        event.to_json()
    with pytest.raises(InvalidEvent):
        event.body()

    assert str(caught.value) == message + _SURROGATE_FIX


def test_int_beyond_the_str_digit_limit_is_refused_naming_the_payload() -> None:
    event = Event("custom", {"n": 10**5000})

    with pytest.raises(InvalidEvent) as caught:
        event.to_json()

    assert str(caught.value).startswith(
        "payload: not serialisable as JSON (Exceeds the limit (4300 digits) for integer string"
    )


def test_valid_surrogate_pair_is_kept() -> None:
    assert Event("token", {"t": "\U0001f44d"}, seq=1, ts=1.0).to_json() == (
        '{"seq":1,"type":"token","payload":{"t":"👍"},"trace_id":"","ts":1.0}'
    )
