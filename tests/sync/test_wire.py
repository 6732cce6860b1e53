"""The wire format's number rule: every number is finite, wherever it sits."""

from __future__ import annotations

import pytest

from edge_agent.sync.wire import non_finite_records


@pytest.mark.parametrize(
    "body",
    [
        b'{"protocol": 1, "records": [{"a": 1.5, "b": [2, -3e10, 1e308]}]}',
        b'{"protocol": 1, "records": [{"big": 179769313486231570000000}]}',
        b"{not json",  # the schema check reports it
        b"[" * 5000 + b"]" * 5000,  # too deep for the scan: the schema check refuses it too
    ],
)
def test_finite_or_unreadable_bodies_pass_the_scan(body: bytes) -> None:
    assert non_finite_records(body) is None


@pytest.mark.parametrize(
    ("body", "records"),
    [
        (b'{"records": [{"t": 1}, {"t": NaN}]}', [1]),
        (b'{"records": [{"t": Infinity}, {"x": [{"y": -Infinity}]}, {}]}', [0, 1]),
        (b'{"records": [{"t": 1e999}, {"t": -1E+400}]}', [0, 1]),
        (b'{"records": [{"t": 1' + b"0" * 400 + b"}]}", [0]),  # an integer past any float
        (b'{"records": [{"t": 1' + b"0" * 5000 + b"}]}", [0]),  # past Python's digit limit
        (b'{"protocol": NaN, "records": [{}]}', []),  # outside the records: the whole batch
    ],
)
def test_non_finite_numbers_are_found_by_record(body: bytes, records: list[int]) -> None:
    assert non_finite_records(body) == records


def test_the_device_refuses_a_host_answer_with_a_non_finite_number() -> None:
    from pydantic import ValidationError

    from edge_agent.sync.wire import BatchResult

    answer = '{"key": "k", "received": 1, "stored": 1, "duplicates": 0, "received_at": %s}'
    assert BatchResult.model_validate_json(answer % "1.5").received_at == 1.5
    with pytest.raises(ValidationError, match="finite"):
        BatchResult.model_validate_json(answer % "NaN")
