"""Curation: what is kept, what is dropped, duplicates, and splits that never leak."""

from __future__ import annotations

import json
from pathlib import Path

from edge_agent.host.curate import (
    Record,
    curate,
    curate_against,
    curate_split,
    held_out_split,
    normalize_request,
    record_from_interaction,
    records_from_store,
    split_part,
)
from edge_agent.skills.home.dataset import load_split
from edge_agent.types import AgentResult, Effect, Interaction, Message, ToolCall, ToolOutcome

ON = ToolCall(name="HassTurnOn", arguments={"name": "kitchen light"})
OFF = ToolCall(name="HassTurnOff", arguments={"name": "kitchen light"})


def rec(i: int, request: str, call: ToolCall | None = ON, **kw: object) -> Record:
    return Record(id=f"r{i:03d}", request=request, call=call, **kw)  # type: ignore[arg-type]


def test_normalize_makes_near_duplicates_equal() -> None:
    assert normalize_request("Turn ON the  light!") == normalize_request("turn on the light")


def test_keeps_good_calls_and_drops_failures_and_unsafe() -> None:
    records = [
        rec(1, "turn on the kitchen light"),
        rec(2, "open the garage", status="needs_confirmation"),
        rec(3, "unlock the door", status="denied"),
        rec(4, "do something", call=None, status="failed"),
        rec(5, "switch on the lamp", status="error"),
        rec(6, "turn on the hall light", rating="down"),
        rec(7, "turn on the porch light", route="escalated"),
    ]
    out = curate(records, validation=0.0, evaluation=0.0)
    assert [r.id for r in out.train] == ["r001", "r007"]
    assert out.dropped == {"unsafe": 2, "failed": 1, "call_error": 1, "thumbs_down": 1}


def test_dedupes_exact_and_near_duplicates_and_drops_conflicts() -> None:
    records = [
        rec(1, "Turn on the kitchen light."),
        rec(2, "turn on the kitchen light"),
        rec(3, "TURN ON  the kitchen light"),
        rec(4, "kitchen light", call=ON),
        rec(5, "kitchen light!", call=OFF),
    ]
    out = curate(records, validation=0.0, evaluation=0.0)
    assert [r.id for r in out.train] == ["r001"]
    assert out.dropped == {"duplicate": 2, "conflicting": 2}


def test_split_never_puts_one_request_in_two_parts() -> None:
    records = [rec(i, f"turn on light {i % 40}" + "!" * (i % 3), area=None) for i in range(200)]
    out = curate(records, validation=0.2, evaluation=0.2)
    parts = [{r.key for r in part} for part in (out.train, out.validation, out.eval)]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert split_part("abc", 1, (0.1, 0.1)) == split_part("abc", 1, (0.1, 0.1))


def test_interaction_becomes_a_record_with_its_context() -> None:
    outcome = ToolOutcome(call=ON, effect=Effect.ACTUATING, status="ok")
    result = AgentResult(request="lights on", model="m", tool_calls=[outcome], route="escalated")
    messages = [Message(role="system", content="s"),
                Message(role="user", content="lights on\n\nSpeaker area: Kitchen")]  # fmt: skip
    record = record_from_interaction(Interaction(result=result, messages=messages))
    assert (record.call, record.status, record.route) == (ON, "ok", "escalated")
    assert record.context == "Speaker area: Kitchen"


def test_split_rows_become_teacher_labels_with_the_devices_context() -> None:
    parts = {name: load_split(name)[:4] for name in ("train", "validation", "test")}
    parts["train"] = [*parts["train"], parts["test"][0]]  # a leak the curation must remove
    out = curate_split(parts)
    assert len(out.eval) == 4 and out.dropped["leak"] == 1
    assert not {r.key for r in out.train} & {r.key for r in out.eval}
    first = out.train[0]
    assert first.call == parts["train"][0].call().model_copy(update={"id": first.call.id})
    assert first.context and first.context.startswith("Speaker area:")


def test_curate_against_a_fixed_eval_set_drops_its_requests_from_training() -> None:
    held_out = [rec(900, "turn on the kitchen light"), rec(901, "open the blinds")]
    logged = [rec(i, f"turn on lamp {i}") for i in range(60)] + [
        rec(100, "Turn on the kitchen light!"),  # a near-duplicate of an eval request
        rec(101, "turn on lamp 3", status="denied"),
    ]
    out = curate_against(logged, held_out, validation=0.2)
    assert [r.id for r in out.eval] == ["r900", "r901"]
    trained = {r.key for r in out.train + out.validation}
    assert normalize_request("turn on the kitchen light") not in trained
    assert len(out.train) + len(out.validation) == 60
    assert 0 < len(out.validation) < 30
    assert out.dropped == {"leak": 1, "unsafe": 1}


def test_store_records_come_back_as_records(tmp_path: Path) -> None:
    from edge_agent.host.ingest_store import Incoming, IngestStore, Quota

    store = IngestStore(tmp_path / "ingest.db")
    try:
        device, _secret, _expires = store.redeem(store.create_token(60), 3600)
        turn = Interaction(result=AgentResult(request="turn on the fan", model="m", tool_calls=[
            ToolOutcome(call=ON, effect=Effect.ACTUATING, status="ok")]))  # fmt: skip
        body = turn.model_dump_json()
        store.ingest(Incoming(device, "k1", "0" * 64, len(body), [(turn.id, 1.0, body)]), Quota())
        (record,) = records_from_store(store)
    finally:
        store.close()
    assert (record.request, record.call, record.status) == ("turn on the fan", ON, "ok")


def test_held_out_split_is_the_committed_test_part() -> None:
    ids = {r.id for r in held_out_split()}
    assert ids <= {row.id for row in load_split("test")}
    assert len(ids) >= 200


def test_a_field_record_without_a_row_evaluates_in_the_shared_home() -> None:
    row = rec(1, "turn on the kitchen light", area="kitchen").as_row()
    assert row.inventory().areas  # the shared HA test home, not a parse error on the id
    assert row.call().name == "HassTurnOn" and row.speaker_area == "kitchen"


def test_a_bad_row_in_the_store_is_skipped_and_counted(tmp_path: Path) -> None:
    """One device's unreadable record (an older host stored Infinity as null) must not stop
    fleet training: it is dropped and counted, the rest is curated."""
    from edge_agent.host.ingest_store import Incoming, IngestStore, Quota
    from edge_agent.host.pipeline import gather

    store = IngestStore(tmp_path / "ingest.db")
    try:
        device, _secret, _expires = store.redeem(store.create_token(60), 3600)
        good = [_turn(f"turn on the fan {i}") for i in range(3)]
        nulled = json.loads(good[0].model_dump_json()) | {"recorded_at": None}
        rows = [(t.id, 1.0, t.model_dump_json()) for t in good] + [
            ("bad-null", 1.0, json.dumps(nulled | {"id": "bad-null"})),
            ("bad-json", 1.0, "{not json"),
        ]
        store.ingest(Incoming(device, "k1", "0" * 64, 1, rows), Quota())
        dropped: dict[str, int] = {}
        records = records_from_store(store, dropped)
        curated = gather(store=store)
    finally:
        store.close()
    assert sorted(r.request for r in records) == [f"turn on the fan {i}" for i in range(3)]
    assert dropped == {"unreadable": 2}
    assert curated.summary()["dropped"] == {"unreadable": 2}  # what `host train` reports
    assert len(curated.train) + len(curated.validation) + len(curated.eval) == 3


def _turn(request: str) -> Interaction:
    outcome = ToolOutcome(call=ON, effect=Effect.ACTUATING, status="ok")
    return Interaction(result=AgentResult(request=request, model="m", tool_calls=[outcome]))
