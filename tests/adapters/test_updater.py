"""Signed adapter distribution: the host's TUF repository, served over HTTPS on 127.0.0.1, and
the device's verifying updater against every TUF attack class; the last good adapter stays."""

from __future__ import annotations

import dataclasses
import http.client
import json
import shutil
import ssl
import stat
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tuf.api.metadata import MetaFile, TargetFile, Targets

from edge_agent.adapters.release import AdapterRelease, CanaryCall
from edge_agent.adapters.updater import SIGNED_AT, AdapterUpdater, ClockFloor, release_custom
from edge_agent.cli import cli
from edge_agent.errors import (
    AdapterMismatchError,
    AdapterVerificationError,
    HostUnreachableError,
    InvalidAdapterError,
    PinMismatchError,
    PublishError,
)
from edge_agent.host.publish import DAY_S, AdapterRepository
from edge_agent.lora.gguf import export_lora_gguf
from edge_agent.models.gguf import BaseModelIdentity
from edge_agent.sync import enroll
from edge_agent.sync.enrollment import pinned_context
from tests import tuf_support as attacker
from tests.sync_support import Cert, HostServer, make_cert, token
from tests.tinymodel import TinyLora

# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tiny_lora: TinyLora, identity: BaseModelIdentity, tmp_path_factory: Any) -> Path:
    path = tmp_path_factory.mktemp("adapter") / "home.gguf"
    return export_lora_gguf(tiny_lora.state, alpha=tiny_lora.alpha, identity=identity, path=path)


@pytest.fixture(scope="module")
def foreign(tiny_lora: TinyLora, identity: BaseModelIdentity, tmp_path_factory: Any) -> Path:
    """The same shapes, trained for another base model."""
    other = dataclasses.replace(identity, base_name="another-model")
    path = tmp_path_factory.mktemp("foreign") / "other.gguf"
    return export_lora_gguf(tiny_lora.state, alpha=tiny_lora.alpha, identity=other, path=path)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: Any) -> Cert:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def repo(tmp_path: Path) -> AdapterRepository:
    return AdapterRepository.init(tmp_path / "tuf")


@pytest.fixture
def host(tmp_path: Path, cert: Cert, repo: AdapterRepository) -> Iterator[HostServer]:
    server = _serve(tmp_path / "host", cert, repo.folder)
    yield server
    server.stop()


@pytest.fixture
def device(
    tmp_path: Path, host: HostServer, repo: AdapterRepository, identity: BaseModelIdentity
) -> Iterator[AdapterUpdater]:
    with _updater(tmp_path / "device", host, repo, identity=identity) as updater:
        yield updater


@dataclasses.dataclass
class Installed:
    release: AdapterRelease
    path: Path
    content: bytes


@pytest.fixture
def installed(repo: AdapterRepository, device: AdapterUpdater, adapter: Path) -> Installed:
    """Release 1 published, refreshed and downloaded: the last known good adapter."""
    release = _publish(repo, adapter, 1)
    device.refresh()
    path = device.download(release)
    return Installed(release, path, path.read_bytes())


def _serve(root: Path, cert: Cert, tuf_dir: Path) -> HostServer:
    root.mkdir(parents=True, exist_ok=True)
    return HostServer(root, cert, {"tuf_dir": tuf_dir}).start()


def _updater(
    state: Path, host: HostServer, repo: AdapterRepository, **options: Any
) -> AdapterUpdater:
    context = pinned_context(host.cert.pem)
    return AdapterUpdater(state, host.url, repo.trusted_root(), ssl_context=context, **options)


def _release(version: int, identity: BaseModelIdentity | dict[str, Any]) -> AdapterRelease:
    base = identity if isinstance(identity, dict) else identity.as_dict()
    return AdapterRelease(
        name=f"home-v{version}",
        skill="home",
        version=version,
        base_identity=base,
        target_profiles=["raspberry-pi-5"],
        centroids=[[0.25, -1.5]],
        cluster_names=["lights"],
        canary=[CanaryCall(text="turn on the kitchen light", name="HassTurnOn")],
        gate={"exact": 0.9},
    )


def _publish(repo: AdapterRepository, adapter: Path, version: int) -> AdapterRelease:
    release = _release(version, read_identity(adapter))
    repo.publish(adapter, release)
    return release


def read_identity(adapter: Path) -> dict[str, Any]:
    from edge_agent.lora.gguf import adapter_identity

    return adapter_identity(adapter).as_dict()


def _assert_kept(device: AdapterUpdater, good: Installed) -> None:
    """The last good adapter is where it was, intact, and nothing else was installed."""
    assert good.path.read_bytes() == good.content
    installed = sorted(p.name for p in device.targets_dir.rglob("*") if p.is_file())
    assert installed == [good.path.name]
    staging = device.state_dir / "staging"
    assert not staging.exists() or not any(staging.iterdir())


# --- the happy path ---------------------------------------------------------------------------


def test_publish_enroll_refresh_download(
    tmp_path: Path,
    repo: AdapterRepository,
    host: HostServer,
    adapter: Path,
    identity: BaseModelIdentity,
) -> None:
    first = _publish(repo, adapter, 1)
    enrollment = enroll(host.url, token(host), pin=host.cert.sha256)
    assert enrollment.trusted_root == repo.trusted_root()
    state = tmp_path / "device"
    with AdapterUpdater.from_enrollment(enrollment, state, identity=identity) as device:
        assert device.refresh() == [first]
        assert device.latest("home") == first and device.latest("system") is None
        path = device.download(first)
        assert path == state / "targets" / "home" / "home-v1.gguf"
        assert path.read_bytes() == adapter.read_bytes()
        second = _publish(repo, adapter, 2)
        assert device.refresh() == [first, second]
        assert device.latest("home") == second
        assert device.download(second).read_bytes() == adapter.read_bytes()
        assert device.download(first) == path  # already there and verified: no download
    assert ClockFloor(state / "clock-floor.json").value() > time.time() - 60


# --- every TUF attack class -------------------------------------------------------------------


def test_tampered_adapter_is_rejected(
    repo: AdapterRepository, device: AdapterUpdater, installed: Installed, adapter: Path
) -> None:
    second = _publish(repo, adapter, 2)
    served = attacker.target_file(repo, second.name)
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same length
    served.write_bytes(bytes(data))
    device.refresh()
    with pytest.raises(AdapterVerificationError, match="hash/length"):
        device.download(second)
    _assert_kept(device, installed)


def test_endless_data_stops_at_the_signed_length(
    repo: AdapterRepository, device: AdapterUpdater, installed: Installed, adapter: Path
) -> None:
    second = _publish(repo, adapter, 2)
    with attacker.target_file(repo, second.name).open("ab") as served:
        served.write(b"\0" * (8 << 20))  # the host now serves 8 MiB more than it signed
    device.refresh()
    with pytest.raises(AdapterVerificationError, match="oversize"):
        device.download(second)
    _assert_kept(device, installed)


def test_metadata_signed_by_a_wrong_key_is_rejected(
    repo: AdapterRepository, device: AdapterUpdater, installed: Installed
) -> None:
    stamp = attacker.timestamp(repo)
    stamp.signed.version += 1
    attacker.write(repo, stamp, attacker.own_key())
    with pytest.raises(AdapterVerificationError, match="signature"):
        device.refresh()
    _assert_kept(device, installed)


def test_targets_need_the_targets_key_even_with_stolen_online_keys(
    repo: AdapterRepository, device: AdapterUpdater, installed: Installed, adapter: Path
) -> None:
    evil = _release(9, read_identity(adapter))

    def add_evil(targets: Targets) -> None:
        info = TargetFile.from_file(evil.target_path, str(adapter))
        info.unrecognized_fields["custom"] = release_custom(evil)
        targets.targets[evil.target_path] = info

    attacker.forge_chain(repo, add_evil, targets_key=attacker.own_key())
    with pytest.raises(AdapterVerificationError, match="signature"):
        device.refresh()
    assert device.latest("home") == installed.release  # the last verified view stands
    _assert_kept(device, installed)


def test_rollback_to_an_older_timestamp_is_rejected(
    repo: AdapterRepository, device: AdapterUpdater, installed: Installed, adapter: Path
) -> None:
    old = (repo.metadata_dir / "timestamp.json").read_bytes()
    _publish(repo, adapter, 2)
    device.refresh()
    (repo.metadata_dir / "timestamp.json").write_bytes(old)  # replay: validly signed, older
    with pytest.raises(AdapterVerificationError, match="rollback"):
        device.refresh()
    _assert_kept(device, installed)


def test_rollback_to_an_older_snapshot_is_rejected(
    repo: AdapterRepository, device: AdapterUpdater, installed: Installed, adapter: Path
) -> None:
    _publish(repo, adapter, 2)
    device.refresh()
    stamp = attacker.timestamp(repo)  # the stolen timestamp key points back at snapshot v1
    stamp.signed.version += 1
    first = (repo.metadata_dir / "1.snapshot.json").read_bytes()
    stamp.signed.snapshot_meta = MetaFile(1, len(first))
    attacker.write(repo, stamp, attacker.stolen(repo, "timestamp"))
    with pytest.raises(AdapterVerificationError, match="rollback"):
        device.refresh()
    _assert_kept(device, installed)


def test_frozen_metadata_expires(
    tmp_path: Path,
    repo: AdapterRepository,
    host: HostServer,
    installed: Installed,
    device: AdapterUpdater,
) -> None:
    """The host stopped re-signing (or a mirror froze it): two days on, the device refuses."""
    later = time.time() + 2 * DAY_S
    with _updater(device.state_dir, host, repo, clock=lambda: later) as frozen:
        with pytest.raises(AdapterVerificationError, match="expired"):
            frozen.refresh()
        _assert_kept(frozen, installed)
        AdapterRepository(repo.folder, clock=lambda: later).refresh()  # the host signs again
        assert frozen.refresh() == [installed.release]


def test_mix_and_match_is_rejected(
    repo: AdapterRepository, device: AdapterUpdater, installed: Installed, adapter: Path
) -> None:
    _publish(repo, adapter, 2)
    version = attacker.snapshot(repo).signed.meta["targets.json"].version
    older = (repo.metadata_dir / f"{version - 1}.targets.json").read_bytes()
    (repo.metadata_dir / f"{version}.targets.json").write_bytes(older)  # another version's
    with pytest.raises(AdapterVerificationError, match="mix-and-match"):
        device.refresh()
    _assert_kept(device, installed)


def test_adapter_for_another_base_is_not_downloaded(
    repo: AdapterRepository, device: AdapterUpdater, installed: Installed, foreign: Path
) -> None:
    other = _publish(repo, foreign, 2)
    assert other in device.refresh()
    assert device.latest("home") == installed.release  # only releases for this base count
    with pytest.raises(AdapterMismatchError, match="another base model"):
        device.download(other)
    _assert_kept(device, installed)


def test_a_signed_file_that_is_not_an_adapter_is_refused_after_verification(
    tmp_path: Path, repo: AdapterRepository, device: AdapterUpdater, installed: Installed
) -> None:
    """A host bug (or its own keys) signs junk: the hash matches, the GGUF parser says no."""
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 400)
    bad = _release(2, installed.release.base_identity)
    info = TargetFile.from_file(bad.target_path, str(junk))
    info.unrecognized_fields["custom"] = release_custom(bad)
    served = repo.targets_dir / info.get_prefixed_paths()[0]
    served.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(junk, served)
    attacker.forge_chain(
        repo,
        lambda t: t.targets.__setitem__(bad.target_path, info),
        targets_key=attacker.stolen(repo, "targets"),
    )
    device.refresh()
    with pytest.raises(InvalidAdapterError):
        device.download(bad)
    _assert_kept(device, installed)


# --- faults -----------------------------------------------------------------------------------


def test_host_down_is_unreachable_quickly_and_nothing_is_lost(
    host: HostServer, device: AdapterUpdater, installed: Installed
) -> None:
    host.stop()
    started = time.monotonic()
    with pytest.raises(HostUnreachableError):
        device.refresh()
    assert time.monotonic() - started < 5
    _assert_kept(device, installed)
    assert device.download(installed.release) == installed.path  # verified earlier: no network


def test_another_certificate_is_a_pin_mismatch(
    tmp_path: Path, repo: AdapterRepository, host: HostServer
) -> None:
    other = make_cert(tmp_path, "other")
    state = tmp_path / "device"
    context = pinned_context(other.pem)
    with (
        AdapterUpdater(state, host.url, repo.trusted_root(), ssl_context=context) as device,
        pytest.raises(PinMismatchError),
    ):
        device.refresh()


# --- devices without a real-time clock ----------------------------------------------------------


def test_clock_floor_rejects_what_expired_before_the_hosts_last_signature(
    tmp_path: Path, cert: Cert, adapter: Path
) -> None:
    start = time.time()
    host_now = [start]
    repo = AdapterRepository.init(tmp_path / "tuf", clock=lambda: host_now[0])
    _publish(repo, adapter, 1)
    stale = Path(shutil.copytree(repo.folder, tmp_path / "stale"))  # a frozen mirror at `start`
    host_now[0] = start + 10 * DAY_S
    repo.refresh()
    live, mirror = _serve(tmp_path / "live", cert, repo.folder), _serve(tmp_path / "m", cert, stale)
    floor_file, device_clock = tmp_path / "floor.json", lambda: start  # the clock is 10 days behind
    try:
        with _updater(tmp_path / "a", live, repo, clock=device_clock, floor_file=floor_file) as a:
            a.refresh()
            assert a.floor.value() == pytest.approx(start + 10 * DAY_S, abs=1)
        # The same device, its metadata cache lost, pointed at the frozen mirror: refused.
        with (
            _updater(tmp_path / "b", mirror, repo, clock=device_clock, floor_file=floor_file) as b,
            pytest.raises(AdapterVerificationError, match="expired"),
        ):
            b.refresh()
        # Without the floor the same clock would have believed the mirror.
        with _updater(tmp_path / "c", mirror, repo, clock=device_clock) as c:
            assert [r.name for r in c.refresh()] == ["home-v1"]
        assert ClockFloor(floor_file).value() == pytest.approx(start + 10 * DAY_S, abs=1)
    finally:
        live.stop()
        mirror.stop()


def test_clock_floor_never_moves_backwards(tmp_path: Path) -> None:
    floor = ClockFloor(tmp_path / "floor.json")
    assert floor.value() == 0.0
    assert floor.advance(2000.0) == 2000.0
    assert floor.advance(1000.0) == 2000.0
    assert ClockFloor(tmp_path / "floor.json").value() == 2000.0  # persisted
    (tmp_path / "floor.json").write_text("{damaged")
    assert floor.value() == 0.0  # damaged: the system clock alone decides, until next refresh


def test_reference_time_is_the_later_of_clock_and_floor(tmp_path: Path) -> None:
    root: dict[str, Any] = {"signed": {}, "signatures": []}
    device = AdapterUpdater(tmp_path, "https://127.0.0.1:1", root, clock=lambda: 1000.0)
    try:
        assert device.reference_time().timestamp() == 1000.0
        device.floor.advance(5000.0)
        assert device.reference_time().timestamp() == 5000.0
    finally:
        device.close()


# --- the host's repository ----------------------------------------------------------------------


def test_init_writes_keys_private_and_version_one_metadata(tmp_path: Path) -> None:
    repo = AdapterRepository.init(tmp_path / "tuf", root_key_dir=tmp_path / "offline")
    keys = sorted((tmp_path / "tuf" / "keys").iterdir())
    assert [k.name for k in keys] == ["snapshot.pem", "targets.pem", "timestamp.pem"]
    for key in [*keys, tmp_path / "offline" / "root.pem"]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tuf" / "keys").stat().st_mode) == 0o700
    assert repo.versions() == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1}
    root = repo.trusted_root()["signed"]
    assert root["consistent_snapshot"] is True
    assert {r: len(v["keyids"]) for r, v in root["roles"].items()} == {
        "root": 1,
        "targets": 1,
        "snapshot": 1,
        "timestamp": 1,
    }
    with pytest.raises(PublishError, match="already holds"):
        AdapterRepository.init(tmp_path / "tuf")


def test_publish_bumps_versions_and_round_trips_the_release(
    repo: AdapterRepository, adapter: Path
) -> None:
    release = _publish(repo, adapter, 1)
    assert repo.versions() == {"root": 1, "targets": 2, "snapshot": 2, "timestamp": 2}
    assert repo.releases() == [release]
    assert repo.next_version("home") == 2 and repo.next_version("system") == 1
    info = attacker.targets(repo).signed.targets[release.target_path]
    assert info.length == adapter.stat().st_size
    assert attacker.target_file(repo, release.name).name == f"{info.hashes['sha256']}.home-v1.gguf"
    stamp = attacker.timestamp(repo).signed.unrecognized_fields[SIGNED_AT]
    assert abs(datetime_epoch(stamp) - time.time()) < 60
    assert {p.name for p in repo.metadata_dir.glob("*.json")} >= {
        "1.root.json",
        "root.json",
        "2.targets.json",
        "2.snapshot.json",
        "timestamp.json",
    }


def test_publish_refuses_taken_names_other_bases_and_non_adapters(
    tmp_path: Path, repo: AdapterRepository, adapter: Path, foreign: Path
) -> None:
    _publish(repo, adapter, 1)
    with pytest.raises(PublishError, match="already published"):
        _publish(repo, adapter, 1)
    lying = _release(2, read_identity(foreign))
    with pytest.raises(AdapterMismatchError):
        repo.publish(adapter, lying)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf" * 50)
    with pytest.raises(InvalidAdapterError):
        repo.publish(junk, _release(2, read_identity(adapter)))
    unsafe = _release(2, read_identity(adapter)).model_copy(update={"name": "../../etc"})
    with pytest.raises(PublishError, match="plain file name"):
        repo.publish(adapter, unsafe)
    assert repo.versions()["targets"] == 2  # nothing of the refused ones was signed


def test_refresh_resigns_the_timestamp_and_roles_near_expiry(tmp_path: Path) -> None:
    now = [time.time()]
    repo = AdapterRepository.init(tmp_path / "tuf", clock=lambda: now[0])
    assert repo.refresh() == 2
    assert repo.versions() == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 2}
    now[0] += 4 * DAY_S  # the snapshot (7 days) is past half its life
    repo.refresh()
    assert repo.versions() == {"root": 1, "targets": 1, "snapshot": 2, "timestamp": 3}
    now[0] += 200 * DAY_S  # targets and root too
    repo.refresh()
    assert repo.versions() == {"root": 2, "targets": 2, "snapshot": 3, "timestamp": 4}
    assert (repo.metadata_dir / "2.root.json").read_bytes() == (
        repo.metadata_dir / "root.json"
    ).read_bytes()


def test_a_renewed_root_is_followed_by_devices(
    tmp_path: Path, cert: Cert, adapter: Path, identity: BaseModelIdentity
) -> None:
    now = [time.time()]
    repo = AdapterRepository.init(tmp_path / "tuf", clock=lambda: now[0])
    first_root = repo.trusted_root()
    _publish(repo, adapter, 1)
    now[0] += 200 * DAY_S
    repo.refresh()
    server = _serve(tmp_path / "host", cert, repo.folder)
    try:
        context = pinned_context(cert.pem)
        later = now[0]
        with AdapterUpdater(
            tmp_path / "d", server.url, first_root, ssl_context=context, clock=lambda: later
        ) as device:
            assert [r.name for r in device.refresh()] == ["home-v1"]
    finally:
        server.stop()


def datetime_epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# --- serving -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/tuf/metadata/..%2Fkeys%2Ftimestamp.pem",
        "/tuf/metadata/..%2Fconfig.json",
        "/tuf/targets/../keys/root.pem",
        "/tuf/targets/%2e%2e/keys/root.pem",
        "/tuf/targets/adapters/..%2F..%2Fkeys%2Froot.pem",
        "/tuf/targets/%2Fetc%2Fpasswd",
        "/tuf/targets/adapters/home/link.gguf",
        "/tuf/metadata/.lock",
    ],
)
def test_the_repository_cannot_be_left_through_its_routes(
    repo: AdapterRepository, host: HostServer, path: str
) -> None:
    (repo.targets_dir / "adapters" / "home").mkdir(parents=True, exist_ok=True)
    (repo.targets_dir / "adapters" / "home" / "link.gguf").symlink_to(
        repo.folder / "keys" / "targets.pem"
    )
    status, body = _raw_get(host, path)
    assert status == 404 and b"PRIVATE KEY" not in body


def test_metadata_is_served(repo: AdapterRepository, host: HostServer) -> None:
    status, body = _raw_get(host, "/tuf/metadata/1.root.json")
    assert status == 200 and json.loads(body) == repo.trusted_root()


def _raw_get(host: HostServer, path: str) -> tuple[int, bytes]:
    """http.client sends the path as written: no client-side '..' normalization."""
    context = ssl.create_default_context(cadata=host.cert.pem)
    context.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", host.port, context=context, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --- the CLI ------------------------------------------------------------------------------------


def test_host_publish_signs_the_next_version(
    tmp_path: Path, edge_home: Path, adapter: Path
) -> None:
    extra = tmp_path / "release.json"
    extra.write_text(json.dumps({"gate": {"exact": 0.8}, "cluster_names": ["lights"]}))
    runner = CliRunner()
    args = ["host", "publish", str(adapter), "--skill", "home", "--profile", "raspberry-pi-5"]
    first = runner.invoke(cli, [*args, "--json", "--release", str(extra)], catch_exceptions=False)
    assert json.loads(first.output)["name"] == "home-v1"
    second = runner.invoke(cli, args, catch_exceptions=False)
    assert "published home-v2 as adapters/home/home-v2.gguf" in second.output
    repo = AdapterRepository(edge_home / "data" / "host" / "tuf")
    releases = repo.releases()
    assert [r.version for r in releases] == [1, 2]
    assert releases[0].gate == {"exact": 0.8} and releases[1].target_profiles == ["raspberry-pi-5"]
