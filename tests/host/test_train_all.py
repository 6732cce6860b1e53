"""`host train --all`: a job per skill with new data, in this process or as tasks on a local
Ray cluster (2 CPUs), on a store of two custom skills (thermostat, dimmer) and the tiny model:
both train at once, gate on their own held-out rows, and are published signed on the host;
devices pull both; failed jobs are retried, then reported while the other skill publishes;
a skill without new data since its release is skipped."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_agent.adapters.updater import AdapterUpdater
from edge_agent.cli import cli, main
from edge_agent.errors import FlywheelError
from edge_agent.host.finetune import TrainConfig
from edge_agent.host.jobs import InProcess, JobResources, JobResult, RayRunner, TrainJob, run_job
from edge_agent.host.publish import AdapterRepository
from edge_agent.host.train_all import SkillOutcome, TrainAllOptions, publish_with, train_all
from edge_agent.models.gguf import identity_of, read_header
from edge_agent.sync.enrollment import pinned_context
from edge_agent.types import Interaction, ToolCall
from tests.host.flywheel_support import (
    dimmer,
    host_store,
    ingest,
    thermostat,
    thermostat_turn,
    thermostat_turns,
)
from tests.sync_support import HostServer, make_cert
from tests.tinymodel import make_tiny_llama

pytestmark = pytest.mark.integration
SKILLS = ("dimmer", "thermostat")
CLI_TINY = ["--max-steps", "1", "--rank", "2", "--batch-size", "2", "--no-cluster",
            "--margin", "-1", "--min-train", "5"]  # fmt: skip


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"), context=4096).gguf_path


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray with 2 CPUs for this module's tests (`RayRunner` uses a running Ray)."""
    import ray

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")  # a throwaway cluster: no token in ~/.ray
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield
        ray.shutdown()


def dimmer_turns(n: int, start: int = 0) -> list[Interaction]:
    lights = ("desk lamp", "ceiling", "porch", "hall", "reading light")
    turns = []
    for i in range(start, start + n):
        name, level = lights[i % len(lights)], 10 + (i * 7) % 90
        call = ToolCall(name="set_dimmer", arguments={"name": name, "level": level})
        turns.append(thermostat_turn(500 + i, f"dim the {name} to {level} percent ({i})", call,
                                     toolset=dimmer(), shadow=call))  # fmt: skip
    return turns


@pytest.fixture
def store(edge_home: Path) -> None:
    """Two skills synced by one device: 40 thermostat turns and 40 dimmer turns."""
    synced = host_store(edge_home)
    try:
        ingest(synced, thermostat_turns(40) + dimmer_turns(40), [thermostat(), dimmer()])
    finally:
        synced.close()


def repository(edge_home: Path) -> AdapterRepository:
    """The host's adapter repository, where `host train --publish` signs."""
    return AdapterRepository.open_or_init(edge_home / "data" / "host" / "tuf")


def train(
    edge_home: Path,
    model: Path,
    out: Path,
    runner: Any,
    *,
    repo: AdapterRepository | None = None,
    fn: Any = None,
) -> dict[str, SkillOutcome]:
    """`train_all` over this test's store, publishing into `repo` (default: the host's)."""
    repo = repo or repository(edge_home)
    tiny = TrainConfig(max_steps=1, rank=2, batch_size=2)
    options = TrainAllOptions(out, model, tiny, margin=-1.0, min_train=5)
    synced = host_store(edge_home)
    try:
        done = train_all(synced, repo, runner, options, publisher=publish_with(repo, model),
                         fn=fn)  # fmt: skip
    finally:
        synced.close()
    return {o.skill: o for o in done}


# --- seams: `run_job` with something around it (the workers import them from this module) ----


@dataclass(frozen=True)
class Together:
    """Seam: `run_job` once every skill's job has started (a file per start in `folder`):
    the jobs run at the same time, or none gets past the wait."""

    folder: Path

    def __call__(self, job: TrainJob) -> JobResult:
        (self.folder / f"{job.skill}.{os.getpid()}").touch()
        deadline = time.monotonic() + 120
        while not all(any(self.folder.glob(f"{s}.*")) for s in SKILLS):
            if time.monotonic() > deadline:
                raise TimeoutError("the other skill's job never started alongside this one")
            time.sleep(0.05)
        return run_job(job)


@dataclass(frozen=True)
class Faulty:
    """Seam: `run_job`, but the first `fail_first[skill]` tries of a skill's job raise (each
    try leaves a file in `folder`, whichever process runs it)."""

    folder: Path
    fail_first: dict[str, int]

    def __call__(self, job: TrainJob) -> JobResult:
        attempt = self.tries(job.skill) + 1
        (self.folder / f"{job.skill}.{attempt}").touch()
        if attempt <= self.fail_first.get(job.skill, 0):
            raise RuntimeError(f"injected failure {attempt} of {job.skill}")
        return run_job(job)

    def tries(self, skill: str) -> int:
        return len(list(self.folder.glob(f"{skill}.*")))


# --- on Ray -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("store", "ray_cluster")
def test_two_skills_train_at_once_on_ray_are_published_and_devices_pull_both(
    edge_home: Path, model: Path, tmp_path: Path
) -> None:
    starts = tmp_path / "starts"
    starts.mkdir()
    runner = RayRunner("local", JobResources(cpus=1, retries=0))
    with runner:
        done = train(edge_home, model, tmp_path / "runs", runner, fn=Together(starts))
    assert {s: o.status for s, o in done.items()} == dict.fromkeys(SKILLS, "published")
    pids = {p.suffix for p in starts.iterdir()}
    assert len(pids) == 2 and f".{os.getpid()}" not in pids  # two workers, not this process
    repo = repository(edge_home)
    releases = {r.skill: r for r in repo.releases()}
    assert sorted(releases) == list(SKILLS)
    for skill in SKILLS:
        release, turn = releases[skill], tmp_path / "runs" / skill
        assert release.name == f"{skill}-v1" and done[skill].detail.startswith(release.name)
        gate = json.loads((turn / "gate.json").read_text())
        assert gate["promote"] and gate["turn"]["skill"] == skill
        assert release.gate["data_snapshot"] == gate["turn"]["data_snapshot"]
        assert release.gate["data_snapshot"]["rows"] == 40
        assert set(gate["per_intent"]) <= {"set_temperature", "read_sensor", "set_dimmer"}
    _devices_pull_both(repo, model, tmp_path)


def _devices_pull_both(repo: AdapterRepository, model: Path, tmp_path: Path) -> None:
    """A device verifies and installs each skill's release over HTTPS: the very bytes the
    job trained."""
    cert = make_cert(tmp_path)
    server = HostServer(tmp_path / "host", cert, {"tuf_dir": repo.folder}).start()
    try:
        with AdapterUpdater(tmp_path / "device", server.url, repo.trusted_root(),
                            ssl_context=pinned_context(cert.pem),
                            identity=identity_of(read_header(model))) as device:  # fmt: skip
            for skill in SKILLS:
                release = device.latest(skill)
                assert release is not None and release.name == f"{skill}-v1"
                pulled = device.download(release).read_bytes()
                assert pulled == (tmp_path / "runs" / skill / f"{skill}.gguf").read_bytes()
    finally:
        server.stop()


@pytest.mark.usefixtures("store", "ray_cluster")
def test_a_failed_job_is_retried_and_one_that_keeps_failing_is_reported(
    edge_home: Path, model: Path, tmp_path: Path
) -> None:
    faulty = Faulty(tmp_path, {"thermostat": 1, "dimmer": 5})
    with RayRunner("auto", JobResources(cpus=1, retries=1)) as runner:
        done = train(edge_home, model, tmp_path / "runs", runner, fn=faulty)
    assert done["thermostat"].status == "published" and faulty.tries("thermostat") == 2
    assert done["dimmer"].status == "failed" and faulty.tries("dimmer") == 2
    assert done["dimmer"].detail == "RuntimeError: injected failure 2 of dimmer"
    assert [r.name for r in repository(edge_home).releases()] == ["thermostat-v1"]
    assert not (tmp_path / "runs" / "dimmer").exists()


@pytest.mark.usefixtures("store", "ray_cluster")
def test_the_cli_prints_a_line_per_skill_and_fails_if_one_did(
    edge_home: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edge_agent.host.train_all.run_job", Faulty(tmp_path, {"dimmer": 9}))
    out = CliRunner().invoke(cli, ["host", "train", "--all", "--ray", "local", "--publish",
                                   "--retries", "0", "--model", str(model), "--out",
                                   str(tmp_path / "runs"), *CLI_TINY])  # fmt: skip
    assert out.exit_code != 0 and isinstance(out.exception, FlywheelError)
    assert "1 of 2 skills failed: dimmer" in str(out.exception)
    lines = out.stdout.splitlines()
    assert lines[0] == "failed    dimmer: RuntimeError: injected failure 1 of dimmer"
    assert lines[1].startswith("published thermostat: thermostat-v1: ") and len(lines) == 2


# --- in this process --------------------------------------------------------------------------


@pytest.mark.usefixtures("store")
def test_in_process_publishes_what_ray_publishes(
    edge_home: Path, model: Path, tmp_path: Path, ray_cluster: None
) -> None:
    """`--all` without --ray (the CLI, in this process) and the same jobs on Ray, each into
    its own repository: the same releases, with the same data and the same incumbent."""
    args = ["--model", str(model), "--out", str(tmp_path / "a"), *CLI_TINY]
    out = CliRunner().invoke(cli, ["host", "train", "--all", "--publish", "--json", *args])
    assert out.exit_code == 0, out.output + repr(out.exception)
    skills = json.loads(out.stdout)["skills"]
    assert {s: d["status"] for s, d in skills.items()} == dict.fromkeys(SKILLS, "published")
    on_ray = AdapterRepository.init(tmp_path / "tuf-ray")
    with RayRunner("local", JobResources(retries=0)) as runner:
        train(edge_home, model, tmp_path / "b", runner, repo=on_ray)
    assert _published(repository(edge_home)) == _published(on_ray)


def _published(repo: AdapterRepository) -> list[tuple[Any, ...]]:
    """What a release says that does not depend on the run: its name, canary, the data it
    was trained on, the bare base's gate numbers, how many held-out rows."""
    return [(r.name, r.canary, r.gate["data_snapshot"], r.gate["incumbent"],
             r.gate["candidate"]["n"]) for r in repo.releases()]  # fmt: skip


@pytest.mark.usefixtures("store")
def test_a_skill_without_new_data_is_skipped(edge_home: Path, model: Path, tmp_path: Path) -> None:
    first = train(edge_home, model, tmp_path / "one", InProcess())
    assert {s: o.status for s, o in first.items()} == dict.fromkeys(SKILLS, "published")
    again = train(edge_home, model, tmp_path / "two", InProcess())
    for skill in SKILLS:
        assert again[skill].status == "skipped"
        assert again[skill].detail.startswith(f"no new data since {skill}-v1 (40 labelled rows")
    synced = host_store(edge_home)
    try:  # one more thermostat turn, synced later
        ingest(synced, [thermostat_turns(41)[40]], [thermostat()], key="k2")
    finally:
        synced.close()
    out = CliRunner().invoke(cli, ["host", "train", "--all", "--publish", "--model", str(model),
                                   "--out", str(tmp_path / "three"), *CLI_TINY])  # fmt: skip
    assert out.exit_code == 0, out.output + repr(out.exception)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("skipped   dimmer: no new data since dimmer-v1")
    assert lines[1].startswith("published thermostat: thermostat-v2: ")
    latest = repository(edge_home).latest("thermostat")
    assert latest is not None and latest.gate["data_snapshot"]["rows"] == 41


def test_ray_local_starts_a_cluster_here_and_stops_it(edge_home: Path, model: Path) -> None:
    """`--ray local` in a fresh process: a Ray of its own (1 CPU), shut down at the end."""
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-c", "from edge_agent.cli import main; main()", "host", "train",
         "--all", "--ray", "local", "--ray-cpus", "1", "--model", str(model)],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Started a local Ray instance" in done.stderr
    assert done.stdout == "nothing to train: no device has synced a turn here yet\n"


# --- bad input --------------------------------------------------------------------------------


def test_a_ray_address_nothing_listens_on_is_one_line(
    edge_home: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nothing listens on once this closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address, said in ((f"127.0.0.1:{port}", "cannot reach a Ray cluster at"),
                          ("nowhere", "is no address")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(["host", "train", "--all", "--ray", address, "--model", str(model)])
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == FlywheelError.exit_code and said in err
        assert err.startswith("error: ") and len(err.splitlines()) == 1


def test_ray_options_need_all() -> None:
    out = CliRunner().invoke(cli, ["host", "train", "--skill", "home", "--ray", "local"])
    assert out.exit_code == 2 and "--ray runs the jobs of --all" in out.output
    out = CliRunner().invoke(cli, ["host", "train", "--all", "--ray-cpus", "2"])
    assert out.exit_code == 2 and "--ray-cpus sizes a --ray local cluster" in out.output
