"""Curate interactions into training data: keep good calls, drop unsafe ones, dedupe, split.

Kept: successful local calls (the device's call ran and nobody complained) and teacher-labelled
escalations (the teacher's call is the label: distillation). Dropped: failures, calls the
policy denied or wanted confirmed, thumbs-down turns, and local best efforts the router wanted
a teacher for while none was reachable (route ``local_fallback``). Requests that normalize to
the same text are one request: duplicates with the same label collapse to one record,
different labels in the same context are dropped as ambiguous, and a split assigns each
normalized request to exactly one part, so nothing the gate evaluates was trained on.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edge_agent.prompt import dumps
from edge_agent.skills.home.dataset import Row, load_split
from edge_agent.skills.home.inventory import Inventory
from edge_agent.skills.home.retrieve import context_block
from edge_agent.types import CallStatus, Interaction, ToolCall

if TYPE_CHECKING:
    from edge_agent.host.ingest_store import IngestStore

Route = Literal["local", "escalated", "local_fallback"]
LEGACY_SKILL = "home"  # the skill of turns from devices older than skills (they name none)
SPLIT_SEED = 20250704
_SHARED_FIXTURES = "tests/en/_fixtures.yaml"
_PUNCT = re.compile(r"[^\w\s]")
log = logging.getLogger(__name__)


class Record(BaseModel):
    """One interaction as the flywheel sees it: what was asked, in what context, what call."""

    model_config = ConfigDict(frozen=True)

    id: str
    request: str
    area: str | None = None
    context: str | None = None  # the block the device appended to the request (devices, area)
    call: ToolCall | None = None  # the final call: the teacher's label or the verified local call
    status: CallStatus | Literal["failed"] = "ok"
    route: Route = "local"
    rating: Literal["up", "down"] | None = None
    skill: str = LEGACY_SKILL
    row: Row | None = None  # the HA row it came from (its home), when it came from one

    @property
    def key(self) -> str:
        return normalize_request(self.request)

    def label(self) -> str:
        call = self.call
        return dumps([call.name, call.arguments] if call else None)

    def as_row(self) -> Row:
        """A row to evaluate it on: its own, or one in HA's shared test home."""
        if self.row is not None:
            return self.row
        call = self.call or ToolCall(name="none")
        return Row(
            id=self.id, sentence=self.request, intent=call.name, slots=dict(call.arguments),
            context={"area": self.area} if self.area else {}, source_file=_SHARED_FIXTURES,
            fixtures=_SHARED_FIXTURES,
        )  # fmt: skip


def normalize_request(text: str) -> str:
    """Near-duplicates are the same request: case, punctuation and spacing do not count."""
    return " ".join(_PUNCT.sub(" ", text.casefold()).split())


# --- records from sources -------------------------------------------------------------------


def record_from_row(row: Row, homes: dict[str, Inventory] | None = None) -> Record:
    """A committed HA row as a device would log it if a teacher had answered it. `homes`
    memoizes inventories: reading one costs a YAML parse, and many rows share a home."""
    home_key = row.fixtures if row.fixtures == _SHARED_FIXTURES else row.id.rsplit(".", 1)[0]
    homes = {} if homes is None else homes
    inventory = homes.get(home_key) or homes.setdefault(home_key, _device_view(row))
    context = context_block(row.sentence, row.speaker_area, inventory)  # the home toolset's hook
    return Record(
        id=row.id, request=row.sentence, area=row.speaker_area, context=context,
        call=row.call(), route="escalated", row=row,
    )  # fmt: skip


def _device_view(row: Row) -> Inventory:
    # what the device's toolset lists (the simulated home adds e.g. its shopping list)
    from edge_agent.skills.home.simulated import SimulatedHome

    return SimulatedHome(row.inventory()).inventory


def records_from_rows(rows: Iterable[Row]) -> list[Record]:
    homes: dict[str, Inventory] = {}
    return [record_from_row(row, homes) for row in rows]


def record_from_interaction(interaction: Interaction) -> Record:
    """A logged turn; the context is what the device appended to the user's words."""
    result = interaction.result
    first = result.tool_calls[0] if result.tool_calls else None
    status: CallStatus | Literal["failed"] = first.status if first else "failed"
    if result.outcome == "failed":
        status = "failed"
    return Record(
        id=result.id, request=result.request, context=_context_of(interaction),
        call=first.call if first else None, status=status, route=result.route,
        rating=interaction.feedback.rating if interaction.feedback else None,
        skill=result.skill or LEGACY_SKILL,
    )  # fmt: skip


def records_from_store(store: IngestStore, dropped: dict[str, int] | None = None) -> list[Record]:
    """Every interaction the fleet has synced, as records (anonymized on the devices). A row
    that no longer reads as an interaction (stored by an older host, damaged) is skipped and
    counted in ``dropped["unreadable"]``: one device's bad record must not stop the fleet's
    training."""
    records = []
    for row in store.records():
        try:
            records.append(record_from_interaction(Interaction.model_validate_json(row["body"])))
        except ValidationError:
            log.warning("skipping unreadable record %s of %s", row["id"], row["device_id"])
            if dropped is not None:
                dropped["unreadable"] = dropped.get("unreadable", 0) + 1
    return records


def _context_of(interaction: Interaction) -> str | None:
    request = interaction.result.request
    users = [m.content for m in interaction.messages if m.role == "user"]
    first = str(users[0]) if users else ""
    prefix = request + "\n\n"
    return first[len(prefix) :] if first.startswith(prefix) else None


# --- curation -------------------------------------------------------------------------------


@dataclass
class Curated:
    train: list[Record] = field(default_factory=list)
    validation: list[Record] = field(default_factory=list)
    eval: list[Record] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count

    def summary(self) -> dict[str, object]:
        sizes = {"train": len(self.train), "validation": len(self.validation)}
        return sizes | {"eval": len(self.eval), "dropped": dict(self.dropped)}


def drop_reason(record: Record) -> str | None:
    """Why a record must not teach the model anything, or None to keep it."""
    if record.call is None or record.status == "failed":
        return "failed"
    if record.route == "local_fallback":  # the router doubted it and no teacher answered
        return "awaiting_teacher"
    if record.status in ("denied", "needs_confirmation"):
        return "unsafe"
    if record.status != "ok":
        return "call_error"
    if record.rating == "down":
        return "thumbs_down"
    return None


def keep(records: Iterable[Record], dropped: dict[str, int]) -> list[Record]:
    kept = []
    for record in records:
        reason = drop_reason(record)
        if reason is None:
            kept.append(record)
        else:
            dropped[reason] = dropped.get(reason, 0) + 1
    return kept


def dedupe(records: Iterable[Record], dropped: dict[str, int]) -> list[Record]:
    """One record per (request, area, context, label); none where one request in one context
    got different labels. Where the teacher labelled a request, its labels overrule the
    device's own calls in that context (the device's may be what the teacher corrected)."""
    groups: dict[tuple[str, str | None, str | None], list[Record]] = defaultdict(list)
    for record in records:
        groups[(record.key, record.area, record.context)].append(record)
    kept = []
    for every in groups.values():
        group = [r for r in every if r.route == "escalated"] or every
        if len(group) < len(every):
            dropped["overruled"] = dropped.get("overruled", 0) + len(every) - len(group)
        if len({r.label() for r in group}) > 1:
            dropped["conflicting"] = dropped.get("conflicting", 0) + len(group)
            continue
        kept.append(min(group, key=lambda r: r.id))
        if len(group) > 1:
            dropped["duplicate"] = dropped.get("duplicate", 0) + len(group) - 1
    return sorted(kept, key=lambda r: r.id)


def split_part(key: str, seed: int, fractions: tuple[float, float]) -> str:
    """A stable part per normalized request: hashed, so the same on every machine."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    val, ev = fractions
    return "eval" if u < ev else "validation" if u < ev + val else "train"


def curate(
    records: Iterable[Record],
    *,
    seed: int = SPLIT_SEED,
    validation: float = 0.1,
    evaluation: float = 0.1,
    teacher_eval: bool = False,
) -> Curated:
    """Filter, dedupe and split logged records (the field flywheel). ``teacher_eval``: the
    eval part holds teacher labels only; a device's own call on a held-out request is
    dropped (``local_in_eval``), never moved to another part."""
    out = Curated()
    for record in dedupe(keep(records, out.dropped), out.dropped):
        part = split_part(record.key, seed, (validation, evaluation))
        if part == "eval" and teacher_eval and record.route != "escalated":
            out.dropped["local_in_eval"] = out.dropped.get("local_in_eval", 0) + 1
            continue
        getattr(out, part).append(record)
    return out


def curate_against(
    records: Iterable[Record],
    held_out: Sequence[Record],
    *,
    seed: int = SPLIT_SEED,
    validation: float = 0.1,
) -> Curated:
    """The field flywheel gated on a fixed eval set the host keeps (e.g. the committed HA test
    split): logged records become train/validation; any request in the eval set is dropped."""
    out = Curated(eval=list(held_out))
    keys = {r.key for r in held_out}
    for record in dedupe(keep(records, out.dropped), out.dropped):
        if record.key in keys:
            out.dropped["leak"] = out.dropped.get("leak", 0) + 1
            continue
        part = split_part(record.key, seed, (validation, 0.0))
        getattr(out, part).append(record)
    return out


def held_out_split() -> list[Record]:
    """The committed HA test split as labelled records: the headline's held-out eval set."""
    return dedupe(keep(records_from_rows(load_split("test")), {}), {})


def curate_split(rows: dict[str, Sequence[Row]] | None = None) -> Curated:
    """The headline: the committed HA split as teacher-labelled logs; its test part is the
    eval set, and any train/validation request that also appears there is dropped."""
    parts = rows or {name: load_split(name) for name in ("train", "validation", "test")}
    out = Curated()
    test = dedupe(keep(records_from_rows(parts["test"]), out.dropped), out.dropped)
    held_out = {r.key for r in test}
    out.eval = test
    for name, target in (("train", out.train), ("validation", out.validation)):
        records = dedupe(keep(records_from_rows(parts[name]), out.dropped), out.dropped)
        target += [r for r in records if r.key not in held_out]
        out.dropped["leak"] = out.dropped.get("leak", 0) + len(records) - len(target)
    return out
