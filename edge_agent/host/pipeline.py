"""One flywheel turn of one skill: curate → fine-tune → export → gate, timed stage by stage.

A turn trains one skill (`SkillTask`: its name, its tools, its scorer): the examples are
written against its tools, the adapter is ``<skill>.gguf``, the gate scores its held-out
rows with its scorer, and a promoted adapter is published as ``<skill>-vN``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.adapters.release import AdapterRelease, CanaryCall
from edge_agent.errors import FlywheelError
from edge_agent.host.curate import LEGACY_SKILL, Curated, Record, record_from_interaction
from edge_agent.host.finetune import TrainConfig, TrainResult, finetune
from edge_agent.skills.skill import Scorer, exact_call
from edge_agent.types import Interaction

if TYPE_CHECKING:
    from edge_agent.host.cluster import Clustering, ClusterSummary, TextEmbedder
    from edge_agent.host.examples import Example
    from edge_agent.host.ingest_store import IngestStore
    from edge_agent.host.publish import AdapterRepository
    from edge_agent.tools import Toolset


@dataclass(frozen=True)
class SkillTask:
    """What a turn trains: a skill's name, the tools its examples are written against (rebuilt
    from the logged schemas), and the scorer its gate counts with."""

    name: str
    toolset: Toolset
    scorer: Scorer = exact_call
    fingerprint: str | None = None  # the tool set's, when rebuilt from logged schemas

    @property
    def adapter_file(self) -> str:
        return f"{self.name}.gguf"


def legacy_task() -> SkillTask:
    """The skill of turns that name none (devices older than skills): the home tools."""
    from edge_agent.skills.home.toolset import home_toolset

    return SkillTask(LEGACY_SKILL, home_toolset())


@dataclass
class TurnResult:
    out_dir: Path
    adapter: Path  # the exported GGUF
    promoted: bool
    summary: dict[str, Any] = field(default_factory=dict)
    onnx_adapter: Path | None = None  # the same adapter for the onnx backend, when asked for
    skill: str = LEGACY_SKILL


def read_records(path: Path) -> list[Record]:
    """JSONL of logged `Interaction`s or of `Record`s (one per line, either kind)."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        data = json.loads(line)
        is_log = "result" in data
        records.append(
            record_from_interaction(Interaction.model_validate(data))
            if is_log
            else Record.model_validate(data)
        )
    return records


def gather(
    *,
    rows: str | None = None,
    interactions: Path | None = None,
    store: IngestStore | None = None,
    eval_on: str = "curated",
    skill: str = LEGACY_SKILL,
) -> Curated:
    """Curated data of one skill from one source: the committed HA split, a JSONL file, or
    the ingest store (`flywheel.plan_skill`: rows checked against the logged schemas).
    ``eval_on="split"`` gates on the committed HA test split instead of a held-out part."""
    from edge_agent.host import curate as c

    if rows is not None:
        return c.curate_split()
    if store is not None:
        from edge_agent.host.flywheel import plan_skill

        plan = plan_skill(store, skill, eval_on=eval_on)
        if plan.curated is None:
            raise FlywheelError(f"skill {skill!r} cannot be trained: {plan.skipped}")
        return plan.curated
    if interactions is None:
        raise FlywheelError("nothing to train on: give the split, a JSONL file or the store")
    records = [r for r in read_records(interactions) if r.skill == skill]
    if eval_on == "split":
        return c.curate_against(records, c.held_out_split())
    return c.curate(records)


def export_adapter(adapter_dir: Path, model_path: Path, out: Path) -> Path:
    """The peft save as a llama.cpp LoRA GGUF (float32: the parity-tested dtype)."""
    from edge_agent.lora.gguf import export_lora_gguf, load_peft_adapter
    from edge_agent.models.gguf import identity_of, read_header

    state, alpha, _rank = load_peft_adapter(adapter_dir)
    identity = identity_of(read_header(model_path))
    return export_lora_gguf(state, alpha=alpha, identity=identity, path=out, dtype="f32")


def export_onnx_adapter(gguf_adapter: Path, model_path: Path, out: Path) -> Path:
    """The exported GGUF adapter as an ``.onnx_adapter`` for devices whose profile runs the
    onnx backend: converted from the GGUF, so both files hold the same numbers. (The onnx
    backend also converts a GGUF on load; this spares the device that step.)"""
    from edge_agent.lora.onnx import lora_params_from_gguf, write_onnx_adapter
    from edge_agent.models.gguf import identity_of, read_header

    identity = identity_of(read_header(model_path))
    return write_onnx_adapter(lora_params_from_gguf(gguf_adapter, identity), out)


class StageClock:
    """Minutes per named stage of a turn, for its report."""

    def __init__(self) -> None:
        self.minutes: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.minutes[name] = round((time.perf_counter() - started) / 60, 2)


def run_turn(
    curated: Curated,
    model_path: Path,
    out_dir: Path,
    *,
    task: SkillTask | None = None,
    config: TrainConfig | None = None,
    incumbent: Path | None = None,
    margin: float = 0.02,
    progress: bool = True,
    n_ctx: int = 4096,  # the gate's context window, as the devices run it
    onnx_adapter: bool = False,  # also write it as .onnx_adapter next to the GGUF
) -> TurnResult:
    """Train `task`'s skill on `curated.train` (validation for model selection), gate it on
    `curated.eval` against `incumbent` (None: the bare base model)."""
    from edge_agent.host import gate

    if not curated.train or not curated.eval:
        raise FlywheelError(
            f"curation left {len(curated.train)} training and {len(curated.eval)} eval "
            "records; log more successful calls before training"
        )
    task = task or legacy_task()
    clock = StageClock()
    config = config or TrainConfig()
    with clock.stage("train"):
        examples = build_training(curated, task.toolset, model_path)
        trained, context = _train(examples, model_path, out_dir, config, progress)
    with clock.stage("export"):
        adapter = export_adapter(trained.adapter_dir, model_path, out_dir / task.adapter_file)
        onnx = adapter.with_suffix(".onnx_adapter") if onnx_adapter else None
        if onnx is not None:
            export_onnx_adapter(adapter, model_path, onnx)
    with clock.stage("gate"):
        new = evaluate_records(task, model_path, adapter, curated.eval, n_ctx)
        old = evaluate_records(task, model_path, incumbent, curated.eval, n_ctx)
        decision = gate.decide({task.name: new.report}, {task.name: old.report}, margin=margin)
    summary = {"skill": task.name, "toolset": task.fingerprint} | _summary(
        curated, trained, config, clock.minutes, context
    ) | {
        "candidate": new.summary(), "incumbent": old.summary(),
        "incumbent_adapter": str(incumbent) if incumbent else None,
        "onnx_adapter": str(onnx) if onnx else None,
    }  # fmt: skip
    gate.write_report(out_dir, decision, new.report, old.report, turn=summary)
    result = summary | decision.to_dict()
    return TurnResult(out_dir, adapter, decision.promote, result, onnx, task.name)


def evaluate_records(
    task: SkillTask, model_path: Path, adapter: Path | None, records: Sequence[Record], n_ctx: int
) -> Any:
    """The gate's measure on `records`. Rows of the HA dataset run in their own simulated
    homes (the home skill's own evaluator, the published numbers); any other row runs the
    device's agent step over the skill's tools with the context its device logged."""
    from edge_agent.host import gate
    from edge_agent.host.evaluate import evaluate_skill

    rows = [r.row for r in records if r.row is not None]
    if rows and len(rows) == len(records):
        return gate.evaluate_adapter(model_path, rows, adapter, n_ctx=n_ctx)
    return evaluate_skill(model_path, adapter, task.toolset, records, task.scorer, n_ctx=n_ctx)


@dataclass(frozen=True)
class Examples:
    """A turn's tokenized examples, written against the skill's tools."""

    train: list[Example]
    validation: list[Example]
    pad_id: int


def build_training(curated: Curated, toolset: Toolset, model_path: Path) -> Examples:
    """Tokenized as the device prompts (only the tools' schemas matter: they fix key order)."""
    from edge_agent.host.examples import Tokenizer, build_examples

    tokenizer = Tokenizer(model_path)
    try:
        train = build_examples(curated.train, toolset, tokenizer)
        validation = build_examples(curated.validation, toolset, tokenizer)
        return Examples(train, validation, tokenizer.end_of_turn)
    finally:
        tokenizer.close()


def _train(
    examples: Examples, model_path: Path, out_dir: Path, config: TrainConfig, progress: bool
) -> tuple[TrainResult, int]:
    from edge_agent.host.select import context_needed

    trained = finetune(model_path, examples.train, out_dir / "train", config=config,
                       validation=examples.validation, pad_id=examples.pad_id,
                       progress=progress)  # fmt: skip
    # what step 4 (select) needs to know of this skill: how long its prompts + answers run
    return trained, context_needed([len(e.input_ids) for e in examples.train])


def _summary(
    curated: Curated,
    trained: TrainResult,
    config: TrainConfig,
    minutes: dict[str, float],
    context: int,
) -> dict[str, Any]:
    return {
        "data": curated.summary(),
        "context_needed": context,
        "train": config.to_dict() | {
            "steps": trained.steps, "tokens_per_s": round(trained.tokens_per_s, 1),
            "cache_seconds": round(trained.cache_seconds, 1),
            "train_loss": trained.train_loss, "validation_loss": trained.validation_loss,
        },
        "minutes": minutes | {"total": round(sum(minutes.values()), 2)},
    }  # fmt: skip


# what a release keeps of its turn's summary: the gate's verdict and the data snapshot the
# adapter was trained on (`flywheel.new_data_since`)
_RELEASE_GATE = ("candidate", "incumbent", "reason", "data_snapshot")


def canary_set(curated: Curated, size: int = 8) -> list[CanaryCall]:
    """A few labelled validation requests (never the eval set) the device re-checks."""
    records = sorted(curated.validation, key=lambda r: r.id)[:size]
    return [
        CanaryCall(text=r.request, name=r.call.name, arguments=dict(r.call.arguments),
                   context=r.context)
        for r in records if r.call is not None
    ]  # fmt: skip


def publish_turn(
    turn: TurnResult,
    curated: Curated,
    model_path: Path,
    repository: AdapterRepository,
    *,
    skill: str | None = None,
    profiles: Sequence[str] = (),
    clusters: ClusterSummary | None = None,
) -> AdapterRelease:
    """Sign the promoted adapter into the host's TUF repository as the next version of its
    skill (`turn.skill` unless `skill` says otherwise): release ``<skill>-vN``."""
    from edge_agent.models.gguf import identity_of, read_header

    skill = skill or turn.skill
    if not turn.promoted:
        raise FlywheelError("the gate did not promote this adapter; nothing was published")
    version = repository.next_version(skill)
    release = AdapterRelease(
        name=f"{skill}-v{version}", skill=skill, version=version,
        base_identity=identity_of(read_header(model_path)).as_dict(),
        target_profiles=list(profiles), canary=canary_set(curated),
        gate={k: v for k, v in turn.summary.items() if k in _RELEASE_GATE},
        **(clusters.release_fields() if clusters else {}),
    )  # fmt: skip
    repository.publish(turn.adapter, release)
    return release


def cluster_records(records: Sequence[Record], embedder: TextEmbedder) -> Clustering:
    """Paper step 3: the requests' clusters, named by the tools that answered them."""
    from edge_agent.host.cluster import cluster_texts

    tools = [[r.call.name] if r.call else [] for r in records]
    return cluster_texts([r.request for r in records], embedder, tools)


def cluster_overview(clustering: Clustering) -> dict[str, Any]:
    """What the turn's report says about the clusters (the centroids travel in the release)."""
    from edge_agent.host.cluster import skill_of_clusters

    skills = skill_of_clusters(clustering)
    return {
        "k": clustering.k, "embedder": clustering.embedder,
        "clusters": [{"name": c.name, "size": c.size, "skill": skills[c.index]}
                     for c in clustering.clusters],
    }  # fmt: skip
