"""`host train --all`: a training job per skill with new data, publishing on the host.

Which skills: every skill in the store with enough rows (`flywheel.plan_skills`) and new data
since its latest release for this base model (`flywheel.new_data_since`: more labelled rows,
or a newer one, than the release's data snapshot). Each becomes a `TrainJob` run by a
`JobRunner` (in this process, or Ray tasks on a cluster); as each result comes back, the host
writes its files to ``OUT/<skill>/`` and, when the gate promoted it and publishing was asked
for, signs it into the adapter repository with the host's keys: one publish at a time, in
the order the jobs finish.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edge_agent.host.flywheel import MIN_TRAIN, SkillPlan, incumbent_for, new_data_since
from edge_agent.host.jobs import JobOutcome, JobResult, JobRunner, TrainJob, run_job
from edge_agent.host.pipeline import TurnResult
from edge_agent.settings import Settings

if TYPE_CHECKING:
    from edge_agent.host.cluster import Clustering
    from edge_agent.host.finetune import TrainConfig
    from edge_agent.host.publish import AdapterRepository
    from edge_agent.host.skill_data import SchemaStore

__all__ = ["Publisher", "SkillOutcome", "TrainAllOptions", "publish_with", "train_all"]

Status = Literal["published", "trained", "skipped", "failed"]
# signs a promoted turn as its skill's next release; returns the release's name
Publisher = Callable[[TurnResult, SkillPlan, "Clustering | None"], str]
Clusterer = Callable[[Sequence[Any]], "Clustering"]


@dataclass(frozen=True)
class TrainAllOptions:
    out: Path  # each skill's turn lands in OUT/<skill>/
    model_path: Path
    config: TrainConfig
    margin: float = 0.02
    n_ctx: int = 4096
    onnx_adapter: bool = False
    min_train: int = MIN_TRAIN
    settings: Settings | None = None


@dataclass
class SkillOutcome:
    skill: str
    status: Status
    detail: str  # the release, the gate's reason, why it was skipped, or why it failed
    summary: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.status:<9} {self.skill}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return self.summary | {"status": self.status, "detail": self.detail}


def train_all(
    store: SchemaStore,
    repository: AdapterRepository | None,
    runner: JobRunner,
    options: TrainAllOptions,
    *,
    publisher: Publisher | None = None,
    clusterer: Clusterer | None = None,
    fn: Callable[[TrainJob], JobResult] | None = None,
) -> list[SkillOutcome]:
    """Train every skill with new data (`runner`, each job `fn`: `run_job` by default),
    publish each promoted one (`publisher`; None: train and gate only). Outcomes by skill
    name."""
    from edge_agent.host.flywheel import plan_skills

    plans = plan_skills(store, None, settings=options.settings or Settings(),
                        min_train=options.min_train)  # fmt: skip
    outcomes, jobs = [], []
    for plan in plans:
        skipped = plan.skipped or _no_new_data(plan, repository, options.model_path)
        if skipped:
            outcomes.append(SkillOutcome(plan.name, "skipped", skipped, plan.summary()))
        else:
            jobs.append(_job(plan, repository, options))
    by_name = {p.name: p for p in plans}
    for done in runner.run(jobs, fn or run_job):
        plan = by_name[done.skill]
        outcomes.append(_finish(done, plan, repository, options, publisher=publisher,
                                clusterer=clusterer))  # fmt: skip
    return sorted(outcomes, key=lambda o: o.skill)


def _no_new_data(
    plan: SkillPlan, repository: AdapterRepository | None, model_path: Path
) -> str | None:
    _, name = incumbent_for(repository, plan.name, model_path)
    release = repository.latest(plan.name) if repository is not None and name else None
    if new_data_since(plan, release):
        return None
    assert release is not None
    newest = datetime.fromtimestamp(plan.snapshot.newest, UTC).strftime("%Y-%m-%d %H:%M")
    return (f"no new data since {release.name} ({plan.snapshot.rows} labelled rows, "
            f"newest {newest} UTC)")  # fmt: skip


def _job(
    plan: SkillPlan, repository: AdapterRepository | None, options: TrainAllOptions
) -> TrainJob:
    assert plan.curated is not None and plan.task is not None  # planned, not skipped
    incumbent, _ = incumbent_for(repository, plan.name, options.model_path)
    return TrainJob(
        plan.name, plan.curated, plan.task, options.model_path, options.config,
        incumbent=incumbent.read_bytes() if incumbent else None, margin=options.margin,
        n_ctx=options.n_ctx, onnx_adapter=options.onnx_adapter,
    )  # fmt: skip


def _finish(
    done: JobOutcome,
    plan: SkillPlan,
    repository: AdapterRepository | None,
    options: TrainAllOptions,
    *,
    publisher: Publisher | None,
    clusterer: Clusterer | None,
) -> SkillOutcome:
    if done.result is None:
        return SkillOutcome(plan.name, "failed", done.error or "failed", plan.summary())
    incumbent, release = incumbent_for(repository, plan.name, options.model_path)
    extra = {"incumbent_release": release, "data_snapshot": plan.snapshot.to_dict()}
    turn = land(done.result, options.out / plan.name, incumbent, extra)
    clustering = clusterer(plan.curated.train) if clusterer and plan.curated else None
    if clustering is not None:
        from edge_agent.host.pipeline import cluster_overview

        turn.summary["clusters"] = cluster_overview(clustering)
    summary = turn.summary | {"adapter": str(turn.adapter)}
    reason = str(turn.summary.get("reason", ""))
    if not turn.promoted:
        return SkillOutcome(plan.name, "trained", f"kept the incumbent: {reason}", summary)
    if publisher is None:
        return SkillOutcome(plan.name, "trained", f"promoted, not published: {reason}", summary)
    name = publisher(turn, plan, clustering)
    return SkillOutcome(plan.name, "published", f"{name}: {reason}", summary | {"published": name})


def land(
    result: JobResult, out_dir: Path, incumbent: Path | None, extra: dict[str, Any] | None = None
) -> TurnResult:
    """A job's files in `out_dir`, its summary pointing at them (not at the job's temporary
    folder) with `extra` added, in gate.json too."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in result.files.items():
        (out_dir / name).write_bytes(data)
    adapter = out_dir / result.adapter_file
    onnx = adapter.with_suffix(".onnx_adapter")
    onnx_path = onnx if onnx.name in result.files else None
    summary = result.summary | {
        "incumbent_adapter": str(incumbent) if incumbent else None,
        "onnx_adapter": str(onnx_path) if onnx_path else None,
        "job_seconds": result.seconds,
    } | (extra or {})  # fmt: skip
    report = result.gate_report | {"turn": summary}
    (out_dir / "gate.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return TurnResult(out_dir, adapter, result.promoted, summary, onnx_path, result.skill)


def publish_with(
    repository: AdapterRepository,
    model_path: Path,
    *,
    profiles: Sequence[str] = (),
    embedder_dir: Path | None = None,
) -> Publisher:
    """The host's publish, as `train_all` calls it: the embedder first when the release
    carries centroids (devices need it before the release), then the release itself."""
    from edge_agent.host.pipeline import publish_turn

    def publish(turn: TurnResult, plan: SkillPlan, clustering: Clustering | None) -> str:
        assert plan.curated is not None
        clusters = clustering.summary(skill=plan.name) if clustering else None
        if clusters is not None and clusters.centroids and embedder_dir is not None:
            repository.publish_embedder(embedder_dir)
        release = publish_turn(turn, plan.curated, model_path, repository,
                               profiles=profiles, clusters=clusters)  # fmt: skip
        return release.name

    return publish
