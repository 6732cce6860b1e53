"""The router's distance signal, end to end: the host signs its embedder beside the releases,
the device fetches and verifies it after an activation, the runtime hands the router the
adapter's centroids with it, and calibration picks a distance threshold on validation rows."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from edge_agent.adapters.canary import check_for_updates
from edge_agent.adapters.installed import InstalledAdapters
from edge_agent.adapters.release import AdapterRelease, CanaryCall
from edge_agent.adapters.shipped import ShippedAdapter
from edge_agent.adapters.updater import EMBEDDER_FILES, AdapterUpdater
from edge_agent.backends.base import GenerationRequest
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.cli import cli
from edge_agent.errors import AdapterVerificationError, PublishError
from edge_agent.host.publish import AdapterRepository
from edge_agent.lora.gguf import export_lora_gguf
from edge_agent.models.gguf import BaseModelIdentity
from edge_agent.routing.calibration import calibrate, calibration_for, collect, outcome, signals_in
from edge_agent.routing.embed import Embedder
from edge_agent.routing.router import Clusters, Router, SignalRecord
from edge_agent.runtime import Runtime
from edge_agent.sync.enrollment import pinned_context
from edge_agent.tools import Toolset, register_toolset
from edge_agent.tools.registry import _unregister_toolset
from edge_agent.types import RouteSignals
from quantize.embedder import export_embedder
from tests import demo_tools
from tests import tuf_support as attacker
from tests.embed_support import make_tiny_bert
from tests.sync_support import Cert, HostServer, make_cert
from tests.tinymodel import TinyLora, TinyModel

NAME = "tiny-embedder"  # the embedder's name, as its spec and the releases say it
SKILL = "distdemo"
TEXT = "set the kitchen light to 30"
CALL = json.dumps({"name": "set_light", "arguments": {"name": "kitchen", "brightness": 30}})

# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT exported as an int8 embedder folder named NAME."""
    source = make_tiny_bert(tmp_path_factory.mktemp("bert") / "src")
    return export_embedder(tmp_path_factory.mktemp("embedder") / NAME, source=source, name=NAME)


@pytest.fixture(scope="module")
def centroids(embedder_dir: Path) -> list[list[float]]:
    """One cluster: the canary request itself, so its distance is ~0."""
    return [[float(x) for x in Embedder.open(embedder_dir).embed([TEXT])[0]]]


@pytest.fixture(scope="module")
def adapter(tiny_lora: TinyLora, identity: BaseModelIdentity, tmp_path_factory: Any) -> Path:
    path = tmp_path_factory.mktemp("adapter") / "a.gguf"
    return export_lora_gguf(tiny_lora.state, alpha=tiny_lora.alpha, identity=identity, path=path)


@dataclasses.dataclass(frozen=True)
class Kit:
    """What the device-side tests share: the base, an adapter for it, the embedder."""

    model: TinyModel
    identity: BaseModelIdentity
    adapter: Path
    embedder_dir: Path
    centroids: list[list[float]]


@pytest.fixture(scope="module")
def kit(
    tiny_model: TinyModel,
    identity: BaseModelIdentity,
    adapter: Path,
    embedder_dir: Path,
    centroids: list[list[float]],
) -> Kit:
    return Kit(tiny_model, identity, adapter, embedder_dir, centroids)


@pytest.fixture
def rt(kit: Kit) -> Runtime:
    """A runtime on the scripted backend with a router (offline: it never escalates)."""
    return make_runtime(
        kit, remote_url="http://127.0.0.1:9/v1",
        remote_model="big", remote_api_key_env="EDGE_AGENT_TEST_NO_KEY", offline=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cert(tmp_path_factory: Any) -> Cert:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def repo(tmp_path: Path) -> AdapterRepository:
    return AdapterRepository.init(tmp_path / "tuf")


@pytest.fixture
def host(tmp_path: Path, cert: Cert, repo: AdapterRepository) -> Iterator[HostServer]:
    (tmp_path / "host").mkdir()
    server = HostServer(tmp_path / "host", cert, {"tuf_dir": repo.folder}).start()
    yield server
    server.stop()


@pytest.fixture
def device(tmp_path: Path, host: HostServer, repo: AdapterRepository) -> Iterator[AdapterUpdater]:
    context = pinned_context(host.cert.pem)
    with AdapterUpdater(
        tmp_path / "device", host.url, repo.trusted_root(), ssl_context=context
    ) as updater:
        yield updater


@pytest.fixture(autouse=True)
def demo_toolset() -> Iterator[Toolset]:
    tools = Toolset(SKILL, [demo_tools.set_light])
    register_toolset(SKILL, tools)
    yield tools
    _unregister_toolset(SKILL)


class ByAdapter(ScriptedBackend):
    """Calls set_light with any adapter loaded; the bare base model only answers in words."""

    def __init__(self, identity: BaseModelIdentity) -> None:
        super().__init__([])
        self._identity = identity

    @property
    def identity(self) -> BaseModelIdentity:
        return self._identity

    def generate(self, request: GenerationRequest) -> Iterator:
        self._responses = [CALL if self.active_adapter else '{"answer": "I cannot"}']
        yield from super().generate(request)


def make_runtime(kit: Kit, **extra: Any) -> Runtime:
    from edge_agent.cli._common import plan_for
    from edge_agent.settings import load_settings

    extra.setdefault("tools", SKILL)  # the device runs the skill: its updates pull it
    settings = load_settings(model=str(kit.model.gguf_path), log_enabled=False, **extra)
    return Runtime(settings, plan_for(settings)[0], ByAdapter(kit.identity))


def release(kit: Kit, version: int, centroids: list[list[float]] | None = None) -> AdapterRelease:
    canary = [CanaryCall(text=TEXT, name="set_light", arguments={"name": "kitchen",
                                                                 "brightness": 30})]  # fmt: skip
    return AdapterRelease(
        name=f"{SKILL}-v{version}", skill=SKILL, version=version,
        base_identity=kit.identity.as_dict(), canary=canary, embedder=NAME,
        centroids=kit.centroids if centroids is None else centroids, cluster_names=["lights"],
    )  # fmt: skip


def served(repo: AdapterRepository, file: str) -> Path:
    """The hash-prefixed file the host serves for one of the embedder's files."""
    (found,) = (repo.targets_dir / "embedders" / NAME).glob(f"*.{file}")
    return found


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# --- host: publish_embedder ---------------------------------------------------------------------


def test_publishing_an_embedder_twice_changes_nothing(
    repo: AdapterRepository, embedder_dir: Path
) -> None:
    paths = repo.publish_embedder(embedder_dir)
    assert paths == [f"embedders/{NAME}/{f}" for f in EMBEDDER_FILES]
    signed = attacker.targets(repo).signed.targets
    assert all(signed[p].custom == {"embedder": NAME} for p in paths)
    for file in EMBEDDER_FILES:
        assert served(repo, file).read_bytes() == (embedder_dir / file).read_bytes()
    before = repo.versions()
    assert repo.publish_embedder(embedder_dir) == paths
    assert repo.versions() == before  # nothing re-signed
    assert repo.releases() == []  # an embedder's files are not adapter releases


def test_another_file_under_a_published_embedder_name_is_refused(
    repo: AdapterRepository, embedder_dir: Path, tmp_path: Path
) -> None:
    repo.publish_embedder(embedder_dir)
    before = repo.versions()
    other = shutil.copytree(embedder_dir, tmp_path / "other" / NAME)
    spec = json.loads((other / "embedder.json").read_text())
    (other / "embedder.json").write_text(json.dumps(spec | {"max_length": 8}))
    with pytest.raises(PublishError, match="already published with other content"):
        repo.publish_embedder(other)
    broken = shutil.copytree(embedder_dir, tmp_path / "broken" / NAME)
    flip_a_byte(broken / "model.onnx")
    with pytest.raises(PublishError, match="does not match the sha256"):
        repo.publish_embedder(broken)
    assert repo.versions() == before


# --- device: download_embedder ------------------------------------------------------------------


def test_download_embedder_verifies_every_file_and_renames_the_folder_into_place(
    repo: AdapterRepository,
    device: AdapterUpdater,
    embedder_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo.publish_embedder(embedder_dir)
    assert device.refresh() == []
    assert "skipping target" not in caplog.text  # embedder files are not broken releases
    path = device.download_embedder(NAME)
    assert path == device.state_dir / "embedders" / NAME
    for file in EMBEDDER_FILES:
        assert (path / file).read_bytes() == (embedder_dir / file).read_bytes()
    assert list(device.embedders_dir.iterdir()) == [path]  # no temporary folder left
    assert Embedder.open(path).embed([TEXT]).shape == (1, 16)

    def no_network(*_: Any) -> None:
        raise AssertionError("a verified folder is not downloaded again")

    assert device._tuf is not None
    monkeypatch.setattr(device._tuf, "download_target", no_network)
    assert device.download_embedder(NAME) == path


def test_a_tampered_model_onnx_is_rejected_and_nothing_is_left(
    repo: AdapterRepository, device: AdapterUpdater, embedder_dir: Path
) -> None:
    repo.publish_embedder(embedder_dir)
    flip_a_byte(served(repo, "model.onnx"))  # same length, one bit
    device.refresh()
    with pytest.raises(AdapterVerificationError, match="hash/length"):
        device.download_embedder(NAME)
    assert not device.embedders_dir.exists() or not any(device.embedders_dir.iterdir())


def test_download_embedder_refuses_names_the_host_never_signed(
    repo: AdapterRepository, device: AdapterUpdater, embedder_dir: Path
) -> None:
    repo.publish_embedder(embedder_dir)
    with pytest.raises(AdapterVerificationError, match="not among the host's signed targets"):
        device.download_embedder("another-embedder")
    with pytest.raises(AdapterVerificationError, match="not a plain file name"):
        device.download_embedder("../" + NAME)
    assert not device.embedders_dir.exists()


# --- device: the update round -------------------------------------------------------------------


def _updater(host: HostServer, repo: AdapterRepository, rt: Runtime, state: Path) -> Any:
    return AdapterUpdater(
        state, host.url, repo.trusted_root(), ssl_context=pinned_context(host.cert.pem),
        identity=rt.backend.identity, embedders_dir=rt.settings.embedders_dir,
    )  # fmt: skip


def test_check_for_updates_fetches_the_embedder_after_activation(
    tmp_path: Path, repo: AdapterRepository, host: HostServer, kit: Kit, rt: Runtime
) -> None:
    installed = InstalledAdapters(rt.settings.adapters_dir)
    repo.publish_embedder(kit.embedder_dir)
    repo.publish(kit.adapter, release(kit, 1))
    with _updater(host, repo, rt, tmp_path / "tuf-state") as source:
        report = check_for_updates(source, installed, rt)
    (done,) = report.outcomes
    assert done.action == "activated", done.reason
    assert done.embedder == f"{NAME}: fetched"
    assert f"{SKILL}-v1: embedder {NAME}: fetched" in report.lines()
    folder = rt.settings.embedders_dir / NAME
    assert (folder / "model.onnx").read_bytes() == (kit.embedder_dir / "model.onnx").read_bytes()
    clusters = rt.clusters_for(f"{SKILL}-v1")
    assert clusters is not None and clusters.centroids.shape == (1, 16)


def test_an_embedder_that_cannot_be_fetched_keeps_the_activation_and_is_retried(
    tmp_path: Path, repo: AdapterRepository, host: HostServer, kit: Kit, rt: Runtime
) -> None:
    installed = InstalledAdapters(rt.settings.adapters_dir)
    repo.publish(kit.adapter, release(kit, 1))  # the host forgot the embedder
    with _updater(host, repo, rt, tmp_path / "tuf-state") as source:
        (done,) = check_for_updates(source, installed, rt).outcomes
    assert done.action == "activated"
    assert done.embedder is not None and "not fetched" in done.embedder
    assert "not among the host's signed targets" in done.embedder
    assert installed.active(SKILL).name == f"{SKILL}-v1"  # type: ignore[union-attr]
    assert rt.adapter_of(SKILL) == f"{SKILL}-v1"
    assert rt.clusters_for(f"{SKILL}-v1") is None
    repo.publish_embedder(kit.embedder_dir)
    with _updater(host, repo, rt, tmp_path / "tuf-state") as source:
        report = check_for_updates(source, installed, rt)
    assert report.outcomes == [] and report.embedders == [f"{NAME}: fetched"]
    assert rt.clusters_for(f"{SKILL}-v1") is not None  # a miss was not cached


# --- runtime: the router gets the clusters ------------------------------------------------------


def _routed_distance(rt: Runtime, text: str = TEXT) -> float | None:
    result = rt.agent(SKILL).run(text)
    assert result.routing is not None, result
    return result.routing.signals.distance


def test_the_router_gets_a_distance_once_the_embedder_is_on_the_device(
    kit: Kit, rt: Runtime
) -> None:
    installed = InstalledAdapters(rt.settings.adapters_dir)
    for r in (release(kit, 1, centroids=[]), release(kit, 2)):
        installed.install(r, kit.adapter)
    installed.activate(f"{SKILL}-v1")  # no centroids: no signal, embedder or not
    shutil.copytree(kit.embedder_dir, rt.settings.embedders_dir / NAME)
    assert _routed_distance(rt) is None
    rt.swap_adapter(SKILL, f"{SKILL}-v2")
    assert _routed_distance(rt) == pytest.approx(0.0, abs=1e-3)  # the cluster is TEXT itself
    far = _routed_distance(rt, "what is the weather tomorrow")
    assert far is not None and far > 0.01


def test_no_distance_without_the_embedder_folder(kit: Kit, rt: Runtime) -> None:
    installed = InstalledAdapters(rt.settings.adapters_dir)
    installed.install(release(kit, 1), kit.adapter)
    installed.activate(f"{SKILL}-v1")
    assert _routed_distance(rt) is None
    assert rt.clusters_for(None) is None


def test_a_shipped_adapter_has_clusters_only_when_its_json_carries_a_release(
    tmp_path: Path, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "shipped"
    folder.mkdir()
    metas = {
        "with": {"release": release(kit, 1).model_dump(mode="json")},
        "without": {},
        "narrow": {"release": release(kit, 1, [[1.0, 0.0]]).model_dump(mode="json")},
    }
    shipped = []
    for name, meta in metas.items():
        (folder / f"{name}.gguf").write_bytes(b"gguf")
        (folder / f"{name}.json").write_text(json.dumps({"name": name} | meta))
        sha = hashlib.sha256(b"gguf").hexdigest()
        shipped.append(ShippedAdapter(name, SKILL, folder / f"{name}.gguf", sha, {}))
    monkeypatch.setattr("edge_agent.adapters.shipped.shipped_adapters", lambda: shipped)
    embedders = tmp_path / "embedders"
    rt = make_runtime(kit, embedder_dir=str(embedders))
    assert rt.settings.embedders_dir == embedders
    assert rt.clusters_for("with") is None  # the embedder is not on the device yet
    shutil.copytree(kit.embedder_dir, embedders / NAME)
    found = rt.clusters_for("with")
    assert found is not None and np.allclose(found.centroids, kit.centroids)
    assert rt.clusters_for("without") is None
    assert rt.clusters_for("narrow") is None  # 2-wide centroids, a 16-wide embedder


# --- calibration ------------------------------------------------------------------------------


def _records(with_distance: bool = True) -> list[SignalRecord]:
    """40 attempts whose log-probs say nothing; the 10 far from the clusters are wrong."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(40):
        wrong = i % 4 == 0
        distance = float(rng.uniform(0.55, 0.95) if wrong else rng.uniform(0.05, 0.45))
        signals = RouteSignals(min_logprob=-0.2, mean_logprob=-0.1, chosen_tokens=3,
                               distance=distance if with_distance else None)  # fmt: skip
        records.append(SignalRecord(id=str(i), signals=signals, correct=not wrong))
    return records


def test_calibration_picks_a_distance_threshold_where_distance_separates_errors() -> None:
    records = _records()
    thresholds, met = calibrate(records, 0.99)  # one wrong call kept local would miss it
    assert met
    assert thresholds.max_distance is not None and 0.45 < thresholds.max_distance < 0.55
    stats = outcome(records, thresholds)
    assert stats["local_share"] == 0.75 and stats["accuracy"] == 1.0
    assert signals_in(records) == ["min_logprob", "mean_logprob", "distance"]
    blind = _records(with_distance=False)  # the same rows without the signal: all escalate
    thresholds, met = calibrate(blind, 0.99)
    assert thresholds.max_distance is None and outcome(blind, thresholds)["local_share"] == 0.0
    assert "distance" not in signals_in(blind)


def test_collect_records_the_distance_of_the_adapter_it_calibrates() -> None:
    from edge_agent.skills.home.dataset import load_split
    from edge_agent.skills.home.skill import calibration_rows

    rows = calibration_rows(load_split("validation")[:3])
    asked: list[str | None] = []

    class Unit:
        def embed(self, texts: Any) -> np.ndarray:
            return np.array([[1.0, float(len(t) % 3)] for t in texts], dtype=np.float32)

    def clusters(adapter: str | None) -> Clusters:
        asked.append(adapter)
        return Clusters(Unit(), np.array([[1.0, 0.0]], dtype=np.float32))

    backend = ScriptedBackend(['{"answer": "I cannot"}'] * 3)
    records = collect(backend, rows, adapter="home-v9", router=Router(None, clusters=clusters))
    assert asked == ["home-v9"] * 3
    expected = [1 - 1 / np.hypot(1.0, len(r.request) % 3) for r in rows]
    assert [r.signals.distance for r in records] == pytest.approx(expected, abs=1e-6)


def test_route_report_shows_the_distance_curve(edge_home: Path, monkeypatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_LOG_ENABLED", "false")
    calibration = calibration_for(_records(), 0.97, model="m", adapter="home-v2", skill="home")
    calibration.save(edge_home / "data" / "route.json")
    out = CliRunner().invoke(cli, ["route", "report", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)["calibration"]["home"]
    assert "distance" in data["signals"] and data["thresholds"]["max_distance"] is not None
    shares = [p["local_share"] for p in data["curve_distance"]]
    assert min(shares) == 0.0 and max(shares) == 1.0


# --- host: `host train --publish` signs the embedder before the release -------------------------


def test_host_train_publish_signs_the_embedder_before_the_release(
    tmp_path: Path, embedder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from edge_agent.host.cluster import ClusterSummary

    summary = ClusterSummary(NAME, [[1.0] * 16], ["lights"])
    clustering = SimpleNamespace(summary=lambda skill: summary)
    turn = SimpleNamespace(promoted=True, summary={}, adapter=tmp_path / "a.gguf", skill="home")
    seen: list[list[str]] = []

    def publish_turn(result: Any, curated: Any, model: Any, repo: Any, **kw: Any) -> Any:
        assert kw["clusters"] is summary
        seen.append(sorted(p for p in attacker.targets(repo).signed.targets))
        return SimpleNamespace(name="home-v1")

    pipeline = "edge_agent.host.pipeline"
    monkeypatch.setattr(f"{pipeline}.gather", lambda **_: SimpleNamespace(train=[]))
    monkeypatch.setattr(f"{pipeline}.run_turn", lambda *a, **k: turn)
    monkeypatch.setattr(f"{pipeline}.cluster_overview", lambda c: {})
    monkeypatch.setattr(f"{pipeline}.publish_turn", publish_turn)
    monkeypatch.setattr("edge_agent.cli.host._clusters", lambda records: clustering)
    monkeypatch.setattr("edge_agent.cli.host._embedder_dir", lambda: embedder_dir)
    monkeypatch.setattr("edge_agent.cli.host._model_path", lambda model: tmp_path / "m.gguf")
    out = CliRunner().invoke(cli, ["host", "train", "--rows", "split", "--publish", "--json"])
    assert out.exit_code == 0, out.output
    assert seen == [sorted(f"embedders/{NAME}/{f}" for f in EMBEDDER_FILES)]
    assert json.loads(out.output)["published"] == "home-v1"
