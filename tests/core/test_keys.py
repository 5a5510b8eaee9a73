"""Job ids and the one place that spells Redis keys."""

from __future__ import annotations

import pytest

from runstream.core.errors import InvalidJobId, RunstreamError
from runstream.core.keys import KeySpace, validate_job_id


@pytest.mark.parametrize("job_id", ["a", "job-1.2_X", "x" * 128, "0"])
def test_good_job_ids_pass(job_id: str) -> None:
    assert validate_job_id(job_id) == job_id


@pytest.mark.parametrize(
    ("job_id", "message"),
    [
        ("", "job id must be a non-empty string"),
        (None, "job id must be a non-empty string"),
        ("a}{b", "job id 'a}{b' has characters outside A-Z a-z 0-9 _ . -"),
        ("*", "job id '*' has characters outside A-Z a-z 0-9 _ . -"),
        ("a b", "job id 'a b' has characters outside A-Z a-z 0-9 _ . -"),
        ("잡", "job id '잡' has characters outside A-Z a-z 0-9 _ . -"),
        ("x" * 129, "job id is 129 characters long; at most 128 are allowed"),
        ("y" * 10_000, "job id is 10000 characters long; at most 128 are allowed"),
    ],
)
def test_bad_job_ids_are_refused_with_a_clear_message(job_id: str, message: str) -> None:
    with pytest.raises(InvalidJobId) as caught:
        validate_job_id(job_id)

    assert str(caught.value) == message
    assert isinstance(caught.value, RunstreamError)
    assert isinstance(caught.value, ValueError)


def test_every_key_of_a_job_shares_one_hash_tag() -> None:
    keys = KeySpace("rs").job("j-1")

    assert keys.all == (
        "rs:{j-1}:seq",
        "rs:{j-1}:list",
        "rs:{j-1}:log",
        "rs:{j-1}:stream",
        "rs:{j-1}:meta",
        "rs:{j-1}:reader",
        "rs:{j-1}:lease",
    )
    assert KeySpace("app:rs").job("j").seq == "app:rs:{j}:seq"
    assert KeySpace().job_queue == "rs:jobs"


def test_keyspace_validates_the_job_id() -> None:
    with pytest.raises(InvalidJobId):
        KeySpace().job("a}{b")
