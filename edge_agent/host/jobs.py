"""Training jobs: one skill's turn (fine-tune → export → gate) as a function of its inputs
alone, run in this process one after another or as Ray tasks on a cluster.

The contract is `run_job(TrainJob) -> JobResult`, the same code either way: the job carries
its data snapshot (the curated rows), its task (the skill's tools and scorer), the training
config and the incumbent adapter's bytes; it trains in a temporary folder and returns the
turn's files (the adapter GGUF, an .onnx_adapter if asked for, gate.json and gate.png) as
bytes, with the gate's verdict and the turn's summary. Bytes travel through any cluster's
object store (a LoRA GGUF is a few MB); only the base model must be readable at the same path
where a job runs (the models folder on shared storage, or the same catalog pull on each
node). Nothing is signed or published here: the host does that, one result at a time.

Runners (`open_runner`): `InProcess` runs the jobs in order; `RayRunner` submits every job
as a Ray task with its CPU/GPU/memory request and yields outcomes as they finish. Both retry
a job that raises `retries` times, then report it failed (`JobOutcome.error`) and go on with
the others. `ray` is imported only by `RayRunner`: a device install never needs it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edge_agent.errors import JobClusterError

if TYPE_CHECKING:
    from edge_agent.host.curate import Curated
    from edge_agent.host.finetune import TrainConfig
    from edge_agent.host.pipeline import SkillTask

__all__ = [
    "InProcess",
    "JobFn",
    "JobOutcome",
    "JobResources",
    "JobResult",
    "JobRunner",
    "RayRunner",
    "TrainJob",
    "open_runner",
    "run_job",
]

GB = 1024**3


@dataclass(frozen=True)
class TrainJob:
    """Everything one skill's turn needs, picklable: no store, no repository, no keys."""

    skill: str
    curated: Curated  # the data snapshot: train, validation and held-out eval rows
    task: SkillTask
    model_path: Path  # the base GGUF, readable where the job runs
    config: TrainConfig
    incumbent: bytes | None = None  # the adapter the gate must beat (None: the bare base)
    margin: float = 0.02
    n_ctx: int = 4096
    onnx_adapter: bool = False


@dataclass
class JobResult:
    """What a job hands back to the host: the turn's files and the gate's verdict."""

    skill: str
    promoted: bool
    adapter_file: str  # its name among `files` (``<skill>.gguf``)
    files: dict[str, bytes]  # the turn folder's files: adapter, gate.json, gate.png, ...
    summary: dict[str, Any]  # the turn's summary with the gate's decision (`run_turn`)
    seconds: float = 0.0

    @property
    def gate_report(self) -> dict[str, Any]:
        return dict(json.loads(self.files["gate.json"]))


@dataclass
class JobOutcome:
    skill: str
    result: JobResult | None = None
    error: str | None = None  # why its last try failed (None: it succeeded)


JobFn = Callable[[TrainJob], JobResult]


def run_job(job: TrainJob) -> JobResult:
    """Train, export and gate `job`'s skill in a temporary folder; its files as bytes."""
    from edge_agent.host.pipeline import run_turn

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"edge-agent-train-{job.skill}-") as tmp:
        incumbent = None
        if job.incumbent is not None:
            incumbent = Path(tmp) / "incumbent.gguf"
            incumbent.write_bytes(job.incumbent)
        turn = run_turn(job.curated, job.model_path, Path(tmp) / job.skill, task=job.task,
                        config=job.config, incumbent=incumbent, margin=job.margin,
                        progress=False, n_ctx=job.n_ctx, onnx_adapter=job.onnx_adapter)  # fmt: skip
        files = {p.name: p.read_bytes() for p in turn.out_dir.iterdir() if p.is_file()}
    return JobResult(job.skill, turn.promoted, turn.adapter.name, files, turn.summary,
                     round(time.perf_counter() - started, 2))  # fmt: skip


@dataclass(frozen=True)
class JobResources:
    """What each job asks of the cluster, and how often a failed one is tried again."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None
    retries: int = 1


class JobRunner(Protocol):
    def run(self, jobs: Sequence[TrainJob], fn: JobFn = run_job) -> Iterator[JobOutcome]: ...


@dataclass
class InProcess:
    """Each job in this process, in the order given (today's `host train`)."""

    resources: JobResources = field(default_factory=JobResources)

    def run(self, jobs: Sequence[TrainJob], fn: JobFn = run_job) -> Iterator[JobOutcome]:
        for job in jobs:
            yield self._with_retries(job, fn)

    def _with_retries(self, job: TrainJob, fn: JobFn) -> JobOutcome:
        error = "not run"
        for _ in range(self.resources.retries + 1):
            try:
                return JobOutcome(job.skill, fn(job))
            except Exception as exc:  # a job's failure is its outcome, not the run's
                error = _one_line(exc)
        return JobOutcome(job.skill, error=error)


def _call(fn: JobFn, job: TrainJob) -> JobResult:
    """What a Ray worker runs (module level: workers import it rather than unpickle it)."""
    return fn(job)


class RayRunner:
    """Each job as a Ray task on the cluster at `address` ("auto": the one this machine
    belongs to; "local": a new one on this machine with `local_cpus` CPUs, shut down
    after). Outcomes come back as the jobs finish."""

    def __init__(self, address: str, resources: JobResources, local_cpus: int | None = None):
        self.address, self.resources, self.local_cpus = address, resources, local_cpus
        self._started = False

    def __enter__(self) -> RayRunner:
        _require_reachable(self.address)
        ray = _ray()
        if ray.is_initialized():  # the caller's own Ray (a test's, a notebook's)
            return self
        try:
            if self.address == "local":  # a new one, even beside a running cluster
                ray.init(address="local", num_cpus=self.local_cpus, include_dashboard=False,
                         log_to_driver=False)  # fmt: skip
            else:
                ray.init(address=self.address, log_to_driver=False)
        except Exception as exc:  # Ray raises ConnectionError, ValueError, RuntimeError, ...
            raise JobClusterError(
                f"cannot reach a Ray cluster at {self.address!r}: {_one_line(exc)} "
                "(give HOST:6379, auto or local; ray://HOST:10001 needs ray[client])"
            ) from exc
        self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            _ray().shutdown()

    def run(self, jobs: Sequence[TrainJob], fn: JobFn = run_job) -> Iterator[JobOutcome]:
        ray = _ray()
        task = ray.remote(_call).options(**self._options())
        pending = {task.remote(fn, self._sized(job)): job.skill for job in jobs}
        while pending:
            (done,), _ = ray.wait(list(pending), num_returns=1)
            skill = pending.pop(done)
            try:
                yield JobOutcome(skill, ray.get(done))
            except Exception as exc:  # retried `retries` times already: report, go on
                yield JobOutcome(skill, error=_one_line(getattr(exc, "cause", None) or exc))

    def _options(self) -> dict[str, Any]:
        r = self.resources
        memory = int(r.memory_gb * GB) if r.memory_gb else None
        return {"num_cpus": r.cpus, "num_gpus": r.gpus, "memory": memory,
                "max_retries": r.retries, "retry_exceptions": True}  # fmt: skip

    def _sized(self, job: TrainJob) -> TrainJob:
        """torch uses the CPUs the job asked for, not the host's count."""
        threads = max(1, int(self.resources.cpus))
        return replace(job, config=replace(job.config, threads=threads))


@contextlib.contextmanager
def open_runner(
    ray: str | None, resources: JobResources, *, local_cpus: int | None = None
) -> Iterator[JobRunner]:
    """In this process (`ray` None) or on the Ray cluster at `ray` (an address, auto, local)."""
    if ray is None:
        yield InProcess(resources)
        return
    with RayRunner(ray, resources, local_cpus) as runner:
        yield runner


def _require_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nothing listens on (Ray itself keeps retrying for minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise JobClusterError(
            f"--ray {address!r} is no address: give HOST:6379 (the head's port), auto or local"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise JobClusterError(
            f"cannot reach a Ray cluster at {address!r}: {exc.strerror or exc} (is `ray start "
            "--head` running there?)"
        ) from exc


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise JobClusterError(
            "training on Ray needs the fleet extra: pip install 'edge-agent[fleet]'"
        ) from exc
    return ray


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
