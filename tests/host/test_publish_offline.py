"""The root and targets keys kept off the ingest host: it holds only the snapshot and timestamp
keys and refreshes those; targets are signed on another machine (with a copy of the repository
and the keys), brought over, and the host snapshots them. Devices verify the result as usual."""

from __future__ import annotations

import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_agent.adapters.release import AdapterRelease
from edge_agent.adapters.updater import AdapterUpdater
from edge_agent.cli import cli
from edge_agent.errors import PublishError
from edge_agent.host.publish import DAY_S, AdapterRepository
from edge_agent.lora.gguf import adapter_identity, export_lora_gguf
from edge_agent.models.gguf import BaseModelIdentity
from edge_agent.sync.enrollment import pinned_context
from tests import tuf_support as attacker
from tests.sync_support import HostServer, make_cert
from tests.tinymodel import TinyLora

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def adapter(
    tiny_lora: TinyLora, identity: BaseModelIdentity, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("adapter") / "home.gguf"
    return export_lora_gguf(tiny_lora.state, alpha=tiny_lora.alpha, identity=identity, path=path)


def _release(adapter: Path, version: int) -> AdapterRelease:
    return AdapterRelease(
        name=f"home-v{version}",
        skill="home",
        version=version,
        base_identity=adapter_identity(adapter).as_dict(),
    )


def _keys(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def _copy_repository(repo: AdapterRepository, dest: Path) -> Path:
    """What the operator carries to the offline machine: metadata, targets, config; no keys."""
    shutil.copytree(repo.folder, dest, ignore=shutil.ignore_patterns("keys", ".lock"))
    return dest


def _bring_back(copy: Path, repo: AdapterRepository) -> None:
    """What the operator carries back: new targets (and root) metadata and the new files; the
    copy's timestamp and snapshots stay behind (the host's are newer)."""
    for path in (copy / "metadata").iterdir():
        if path.name != "timestamp.json" and not path.name.endswith(".snapshot.json"):
            shutil.copy2(path, repo.metadata_dir / path.name)
    shutil.copytree(copy / "targets", repo.targets_dir, dirs_exist_ok=True)


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[tuple[AdapterRepository, Path]]:
    """A host repository whose root and targets keys went to `usb`."""
    repo = AdapterRepository.init(tmp_path / "tuf")
    usb = tmp_path / "usb"
    repo.move_keys_offline(usb)
    yield repo, usb


def test_moving_keys_offline_leaves_only_the_online_keys(
    offline: tuple[AdapterRepository, Path],
) -> None:
    repo, usb = offline
    assert _keys(repo.folder / "keys") == {"snapshot.pem", "timestamp.pem"}
    assert _keys(usb) == {"root.pem", "targets.pem"}
    assert stat.S_IMODE(usb.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in usb.iterdir()} == {0o600}
    reopened = AdapterRepository(repo.folder)
    assert reopened.root_key_dir == usb and reopened.targets_key_dir == usb


def test_the_host_refreshes_but_cannot_publish_without_the_offline_keys(
    offline: tuple[AdapterRepository, Path], tmp_path: Path, adapter: Path
) -> None:
    repo, usb = offline
    shutil.move(usb, tmp_path / "unplugged")  # the USB stick is elsewhere
    assert repo.refresh() == 2  # timestamp re-signed with the online key
    with pytest.raises(PublishError, match="targets key .* --keys"):
        repo.publish(adapter, _release(adapter, 1))
    assert repo.versions()["targets"] == 1 and not any(repo.targets_dir.rglob("*.gguf"))


def test_targets_signed_offline_reach_a_device_through_the_host(
    offline: tuple[AdapterRepository, Path],
    tmp_path: Path,
    adapter: Path,
    identity: BaseModelIdentity,
) -> None:
    repo, usb = offline
    trusted_root = repo.trusted_root()
    copy = _copy_repository(repo, tmp_path / "offline-copy")
    signer = AdapterRepository(copy, key_dir=usb)
    release = _release(adapter, signer.next_version("home"))
    signer.publish(adapter, release)
    signer.publish(adapter, _release(adapter, 2))  # twice before bringing anything back
    assert (copy / "metadata" / "3.targets.json").exists()
    assert attacker.timestamp(signer).signed.version == 1  # no online key there: untouched
    repo.refresh()  # the hourly refresh, before the files arrive
    _bring_back(copy, repo)
    repo.refresh()  # snapshots the targets signed elsewhere
    assert repo.versions()["targets"] == 3
    assert [r.name for r in repo.releases()] == ["home-v1", "home-v2"]
    cert = make_cert(tmp_path)
    server = HostServer(tmp_path / "host", cert, {"tuf_dir": repo.folder}).start()
    try:
        with AdapterUpdater(tmp_path / "device", server.url, trusted_root,
                            ssl_context=pinned_context(cert.pem),
                            identity=identity) as device:  # fmt: skip
            assert [r.name for r in device.refresh()] == ["home-v1", "home-v2"]
            assert device.download(release).read_bytes() == adapter.read_bytes()
    finally:
        server.stop()


def test_targets_signed_by_another_key_are_not_snapshotted(
    offline: tuple[AdapterRepository, Path], tmp_path: Path
) -> None:
    """Someone who can write the host's metadata folder still cannot add targets."""
    repo, _ = offline
    forged = attacker.targets(repo)
    forged.signed.version += 1
    forged.signed.targets.clear()
    attacker.write(repo, forged, attacker.own_key())
    repo.refresh()
    assert repo.versions()["targets"] == 1


def test_targets_near_expiry_are_re_signed_offline(
    tmp_path: Path,
) -> None:
    now = [time.time()]
    repo = AdapterRepository.init(tmp_path / "tuf", clock=lambda: now[0])
    repo.move_keys_offline(tmp_path / "usb")
    usb = Path(shutil.move(tmp_path / "usb", tmp_path / "elsewhere"))
    now[0] += 20 * DAY_S  # targets (30 days) past half its life; the host cannot renew it
    repo.refresh()
    assert repo.versions()["targets"] == 1
    copy = _copy_repository(repo, tmp_path / "copy")
    assert AdapterRepository(copy, key_dir=usb, clock=lambda: now[0]).sign_targets() == 2
    _bring_back(copy, repo)
    repo.refresh()
    assert repo.versions()["targets"] == 2
    expires = attacker.targets(repo).signed.expires.timestamp()
    assert expires > now[0] + 29 * DAY_S


def test_the_cli_moves_keys_and_publishes_with_keys_elsewhere(
    tmp_path: Path, edge_home: Path, adapter: Path
) -> None:
    runner = CliRunner()
    usb = tmp_path / "usb"
    moved = runner.invoke(cli, ["host", "offline-keys", str(usb)], catch_exceptions=False)
    assert moved.exit_code == 0 and str(usb) in moved.output
    host_repo = edge_home / "data" / "host" / "tuf"
    assert _keys(host_repo / "keys") == {"snapshot.pem", "timestamp.pem"}
    copy = _copy_repository(AdapterRepository(host_repo), tmp_path / "copy")
    args = ["host", "publish", str(adapter), "--skill", "home", "--repo", str(copy)]
    signed = runner.invoke(cli, [*args, "--keys", str(usb)], catch_exceptions=False)
    assert signed.exit_code == 0, signed.output
    assert "2.targets.json" in signed.output and "host refresh" in signed.output
    _bring_back(copy, AdapterRepository(host_repo))
    refreshed = runner.invoke(cli, ["host", "refresh"], catch_exceptions=False)
    assert refreshed.exit_code == 0 and "targets v2" in refreshed.output
    assert [r.name for r in AdapterRepository(host_repo).releases()] == ["home-v1"]


def test_keys_are_never_moved_over_other_keys(tmp_path: Path) -> None:
    repo = AdapterRepository.init(tmp_path / "tuf")
    usb = tmp_path / "usb"
    usb.mkdir()
    (usb / "targets.pem").write_text("another repository's key")
    with pytest.raises(PublishError, match="holds a key already"):
        repo.move_keys_offline(usb)
    assert _keys(repo.folder / "keys") == {
        "root.pem",
        "targets.pem",
        "snapshot.pem",
        "timestamp.pem",
    }
    assert AdapterRepository(repo.folder).targets_key_dir == repo.folder / "keys"
