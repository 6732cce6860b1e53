"""The device's TUF client for adapters: fetch signed releases from the host, verify, then keep.

Trust starts at the root metadata the host handed over at enrollment (over the pinned TLS
connection). Every refresh runs python-tuf's client workflow (``tuf.ngclient``): root →
timestamp → snapshot → targets, each checked for signature threshold, version (no rollback),
expiry and the length/hashes its parent signed (no mix-and-match). A download is checked
against the signed length and sha256 while it streams (no endless data), then against the
device's base model: first the signed ``base_identity`` (before a byte is fetched), then the
identity in the GGUF header, read by edge-agent's own bounded parser. Only a file that passed
all of it is moved into ``state_dir/targets/<skill>/<name>.gguf``; a failure raises
``AdapterVerificationError`` (or ``AdapterMismatchError`` / ``InvalidAdapterError``) and
leaves every file there as it was. Network faults raise ``HostUnreachableError``.
The sentence embedder a release's centroids came from is fetched the same way
(``download_embedder``: targets ``embedders/<name>/…``, into a folder renamed into place).

Devices without a real-time clock: a board that boots at 1970 (or at its last saved time)
would accept metadata that expired long ago, and a frozen or replayed repository would go
unnoticed. The host writes its signing time into the timestamp's signed part
(``x-edge-agent-signed-at``); after each fully verified refresh the device stores the latest
such time in a *clock floor* file and never lowers it. Expiry is judged at
``max(system clock, floor)``: the device's notion of time never moves backwards, even after a
reboot resets the clock, and metadata that expired before the host's last signature is
refused. python-tuf 7 has no public setting for this; the ngclient ``Updater`` keeps it as
``reference_time`` on its trusted metadata set, which this module sets after constructing the
updater (tuf is pinned to 7.x for this reason). A host whose clock ran far ahead would drag
the floor with it and strand the device's updates once the host clock is fixed: delete
``clock-floor.json`` in the device's adapter state to recover.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from edge_agent.adapters.release import AdapterRelease
from edge_agent.errors import (
    AdapterError,
    AdapterMismatchError,
    AdapterVerificationError,
    EnrollmentError,
    HostUnreachableError,
    InvalidAdapterError,
    InvalidModelFileError,
    PinMismatchError,
)
from edge_agent.lora.gguf import adapter_identity
from edge_agent.models.gguf import BaseModelIdentity
from edge_agent.routing.embed import MODEL_FILE, SPEC_FILE, TOKENIZER_FILE, Embedder
from edge_agent.sync.enrollment import Enrollment, pin_failed, pinned_context

__all__ = [
    "EMBEDDER_FILES",
    "SIGNED_AT",
    "AdapterUpdater",
    "ClockFloor",
    "embedder_target",
    "release_custom",
    "release_from_custom",
    "require_safe_embedder",
    "require_safe_names",
]

log = logging.getLogger(__name__)

SIGNED_AT = "x-edge-agent-signed-at"  # in the timestamp's signed part: when the host signed it
TUF_PREFIX = "/tuf"  # the host serves metadata/ and targets/ under this path
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CHUNK = 1 << 16
EMBEDDERS_PREFIX = "embedders/"  # targets of the embedders releases name, beside adapters/
EMBEDDER_FILES = (SPEC_FILE, MODEL_FILE, TOKENIZER_FILE)


def release_custom(release: AdapterRelease) -> dict[str, Any]:
    """A release as a TUF target's ``custom`` field. Signed metadata is canonical JSON, which
    has no floats (centroids, gate scores), so the release travels as one JSON string."""
    return {"release": release.model_dump_json()}


def release_from_custom(custom: Any) -> AdapterRelease:
    """The release in a target's ``custom``; ValueError if it holds none."""
    if not isinstance(custom, dict) or not isinstance(custom.get("release"), str):
        raise ValueError("no edge-agent release in the target's custom metadata")
    return AdapterRelease.model_validate_json(custom["release"])


def require_safe_names(release: AdapterRelease) -> None:
    """Skill and name become file names on both sides: one plain path segment each."""
    for what, value in (("skill", release.skill), ("name", release.name)):
        _require_plain(f"the release's {what}", value)


def require_safe_embedder(name: str) -> None:
    """An embedder's name becomes a folder name on both sides."""
    _require_plain("the embedder name", name)


def _require_plain(what: str, value: str) -> None:
    if not _SAFE_NAME.match(value) or ".." in value:
        raise AdapterVerificationError(
            f"{what} {value!r} is not a plain file name "
            "(letters, digits, '.', '_', '-'); the host must publish it under another name"
        )


def embedder_target(name: str, file: str) -> str:
    """Where one file of embedder `name` lives in the TUF repository's targets."""
    return f"{EMBEDDERS_PREFIX}{name}/{file}"


class ClockFloor:
    """The latest host signing time this device has verified, persisted; it only moves up."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def value(self) -> float:
        try:
            return float(json.loads(self.path.read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0  # none yet, or damaged: the system clock alone decides

    def advance(self, epoch: float) -> float:
        """Raise the floor to `epoch` if that is later; returns the floor now in force."""
        current = self.value()
        if epoch <= current:
            return current
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        stamp = datetime.fromtimestamp(epoch, UTC).isoformat()
        tmp.write_text(json.dumps({"epoch": epoch, "signed_at": stamp}))
        os.replace(tmp, self.path)
        return epoch


class AdapterUpdater:
    """Signed adapter releases from one host, verified with ``tuf.ngclient``.

    ``base_url`` is the host's URL (as enrolled); its repository lives under ``/tuf``.
    ``refresh()`` needs the network; ``latest()`` uses the last refresh (refreshing once if
    there was none); ``download()`` verifies and installs one release's file.
    """

    def __init__(
        self,
        state_dir: Path,
        base_url: str,
        trusted_root: dict[str, Any],
        *,
        ssl_context: ssl.SSLContext | None = None,
        client: httpx.Client | None = None,
        identity: BaseModelIdentity | None = None,
        floor_file: Path | None = None,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 30.0,
        max_download_s: float = 600.0,
        embedders_dir: Path | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.metadata_dir = self.state_dir / "metadata"
        self.targets_dir = self.state_dir / "targets"
        self.embedders_dir = Path(embedders_dir or self.state_dir / "embedders")
        self.identity = identity
        self.floor = ClockFloor(floor_file or self.state_dir / "clock-floor.json")
        self._base = base_url.rstrip("/") + TUF_PREFIX
        self._root = json.dumps(trusted_root).encode()
        self._clock = clock
        self._owns_client = client is None
        self._client = client or httpx.Client(verify=ssl_context or True, timeout=timeout_s)
        self._fetcher = _HttpxFetcher(self._client, max_download_s)
        self._tuf: Updater | None = None
        self._releases: list[AdapterRelease] = []

    @classmethod
    def from_enrollment(
        cls, enrollment: Enrollment, state_dir: Path, **options: Any
    ) -> AdapterUpdater:
        """An updater for the host this device enrolled with, over the pinned certificate."""
        if enrollment.trusted_root is None:
            raise EnrollmentError(
                "the host had no adapter repository when this device enrolled: run "
                "`edge-agent host serve` (it creates one) and enroll the device again"
            )
        context = pinned_context(enrollment.cert_pem)
        return cls(
            state_dir, enrollment.host_url, enrollment.trusted_root, ssl_context=context, **options
        )

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> AdapterUpdater:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def reference_time(self) -> datetime:
        """The time expiry is judged at: the system clock, never earlier than the floor."""
        return datetime.fromtimestamp(max(self._clock(), self.floor.value()), UTC)

    def refresh(self) -> list[AdapterRelease]:
        """Fetch and verify the latest metadata; every release the host has signed."""
        updater = self._new_updater()
        with _verifying("metadata", self._base):
            updater.refresh()
        self.floor.advance(_signed_at(updater))
        self._tuf, self._releases = updater, _releases_of(updater)
        return list(self._releases)

    def latest(self, skill: str) -> AdapterRelease | None:
        """The newest release for `skill` (on this device's base model, when it is known)."""
        if self._tuf is None:
            self.refresh()
        fitting = [r for r in self._releases if r.skill == skill and self._fits(r)]
        return max(fitting, key=lambda r: r.version, default=None)

    def download(self, release: AdapterRelease) -> Path:
        """Fetch `release`'s file, verify it completely, and only then install it; its path."""
        require_safe_names(release)
        if self._tuf is None:
            self.refresh()
        assert self._tuf is not None
        info = self._signed_target(self._tuf, release)
        signed = _release_in(info)
        self._require_base(signed)
        final = self.targets_dir / signed.skill / f"{signed.name}.gguf"
        if self._tuf.find_cached_target(info, str(final)) is not None:
            return final
        staging = self.state_dir / "staging" / f"{signed.name}.part"
        try:
            with _verifying("adapter", self._base):
                self._tuf.download_target(info, str(staging))
            _require_header(staging, signed)
            _sync(staging)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, final)
        finally:
            staging.unlink(missing_ok=True)
        return final

    def download_embedder(self, name: str) -> Path:
        """Fetch the signed embedder `name` into ``embedders_dir/<name>``: every file verified
        against the signed length and sha256 before anything parses it, then checked by
        ``Embedder.open``, then renamed into place; a failure leaves nothing there."""
        require_safe_embedder(name)
        if self._tuf is None:
            self.refresh()
        assert self._tuf is not None
        infos = {f: self._signed_embedder_file(self._tuf, name, f) for f in EMBEDDER_FILES}
        final = self.embedders_dir / name
        if all(self._tuf.find_cached_target(i, str(final / f)) for f, i in infos.items()):
            return final
        self.embedders_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.embedders_dir))
        try:
            with _verifying("embedder", self._base):
                for file, info in infos.items():
                    self._tuf.download_target(info, str(work / file))
            _require_embedder(work, name)
            for file in EMBEDDER_FILES:
                _sync(work / file)
            work.chmod(0o755)
            _replace_dir(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return final

    # --- helpers ------------------------------------------------------------------------------

    def _signed_embedder_file(self, updater: Updater, name: str, file: str) -> TargetFile:
        path = embedder_target(name, file)
        with _verifying("metadata", self._base):
            info = updater.get_targetinfo(path)
        if info is None:
            raise AdapterVerificationError(
                f"{path} is not among the host's signed targets: the host must publish the "
                f"embedder {name} (`edge-agent host train --publish` does)"
            )
        if not isinstance(info.custom, dict) or info.custom.get("embedder") != name:
            raise AdapterVerificationError(
                f"{path}: its signed custom metadata does not name the embedder {name}; "
                "the host must publish it again"
            )
        return info

    def _new_updater(self) -> Updater:
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        with _verifying("trusted root", self._base):
            updater = Updater(
                str(self.metadata_dir),
                f"{self._base}/metadata/",
                str(self.targets_dir),
                f"{self._base}/targets/",
                fetcher=self._fetcher,
                bootstrap=self._root,
            )
        # ngclient judges expiry at this time; it has no public setting (see the docstring).
        updater._trusted_set.reference_time = self.reference_time()
        return updater

    def _signed_target(self, updater: Updater, release: AdapterRelease) -> TargetFile:
        with _verifying("metadata", self._base):
            info = updater.get_targetinfo(release.target_path)
        if info is None:
            raise AdapterVerificationError(
                f"{release.target_path} is not among the host's signed targets; "
                "refresh and pick a release from that list"
            )
        if _release_in(info) != release:
            raise AdapterVerificationError(
                f"the release {release.name} you asked for differs from what the host signed "
                "for it; use the release as refresh() returned it"
            )
        return info

    def _fits(self, release: AdapterRelease) -> bool:
        return self.identity is None or release.base_identity == self.identity.as_dict()

    def _require_base(self, release: AdapterRelease) -> None:
        if self.identity is None or self._fits(release):
            return
        ours = self.identity.as_dict()
        diff = [
            f"{k}: {release.base_identity.get(k)!r} != {v!r}"
            for k, v in ours.items()
            if release.base_identity.get(k) != v
        ]
        raise AdapterMismatchError(
            f"{release.name} was trained for another base model ({'; '.join(diff)}); "
            "it was not downloaded: pick a release for this device's model"
        )


class _HttpxFetcher(FetcherInterface):
    """ngclient's network side over our httpx client (pinned TLS, timeouts), with a deadline
    for a whole file so a host that trickles bytes cannot hold the device forever."""

    def __init__(self, client: httpx.Client, max_s: float) -> None:
        self._client = client
        self._max_s = max_s

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self._chunks(url)

    def _chunks(self, url: str) -> Iterator[bytes]:
        deadline = time.monotonic() + self._max_s
        try:
            with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise tuf_errors.DownloadHTTPError(
                        f"{url}: HTTP {response.status_code}", response.status_code
                    )
                for chunk in response.iter_bytes(_CHUNK):
                    if time.monotonic() > deadline:
                        raise tuf_errors.SlowRetrievalError(f"{url}: over {self._max_s:.0f} s")
                    yield chunk
        except httpx.HTTPError as exc:
            raise tuf_errors.DownloadError(f"{url}: {exc}") from exc


@contextlib.contextmanager
def _verifying(what: str, url: str) -> Iterator[None]:
    """python-tuf's exceptions as edge-agent's: a verification failure names its class."""
    try:
        yield
    except tuf_errors.DownloadLengthMismatchError as exc:
        raise _rejected("oversize", what, exc) from exc
    except tuf_errors.DownloadHTTPError as exc:
        raise HostUnreachableError(
            f"the host answered HTTP {exc.status_code} for its adapter repository ({exc}); "
            "check that `edge-agent host serve` runs with its repository; nothing changed here"
        ) from exc
    except tuf_errors.DownloadError as exc:
        if pin_failed(exc):
            raise PinMismatchError(
                f"the host's certificate is not the one pinned at enrollment ({exc}): "
                "nothing was fetched; a changed host, or a MITM"
            ) from exc
        raise HostUnreachableError(
            f"cannot fetch adapters from {url}: {exc}; the current adapter stays, try later"
        ) from exc
    except tuf_errors.RepositoryError as exc:
        raise _rejected(_attack_class(exc, what), what, exc) from exc
    except OSError as exc:
        raise AdapterError(f"cannot write the adapter state on this device: {exc}") from exc


def _rejected(kind: str, what: str, exc: BaseException) -> AdapterVerificationError:
    return AdapterVerificationError(
        f"{kind}: the {what} from the host failed verification ({exc}); nothing was "
        "installed and the current adapter stays. Check the host's repository: this may be "
        "an attack"
    )


def _attack_class(exc: tuf_errors.RepositoryError, what: str) -> str:
    message = str(exc)
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return "signature"
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return "expired"
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        # ngclient: "must be >= N" and "Expected targets.json version" are rollbacks; the
        # other "Expected … version" messages are a file that is not the one its parent names.
        rollback = "must be >=" in message or re.search(r"\.json version", message)
        return "rollback" if rollback else "mix-and-match"
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return "hash/length" if what in ("adapter", "embedder") else "mix-and-match"
    if "missing info" in message:
        return "rollback"
    return "invalid metadata"


def _signed_at(updater: Updater) -> float:
    stamp = updater._trusted_set.timestamp.unrecognized_fields.get(SIGNED_AT)
    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return 0.0  # an older host: the floor stays where it is


def _releases_of(updater: Updater) -> list[AdapterRelease]:
    found = []
    for path, info in updater._trusted_set.targets.targets.items():
        if path.startswith(EMBEDDERS_PREFIX):
            continue  # an embedder's file, not a release
        try:
            release = _release_in(info)
        except AdapterVerificationError as exc:
            log.warning("skipping target %s: %s", path, exc)
            continue
        found.append(release)
    return sorted(found, key=lambda r: (r.skill, r.version))


def _release_in(info: TargetFile) -> AdapterRelease:
    """The signed release record of a target; its path must be the one the record names."""
    try:
        release = release_from_custom(info.custom)
    except ValueError as exc:  # pydantic's ValidationError is one
        raise AdapterVerificationError(
            f"{info.path}: its signed custom metadata is not an adapter release ({exc})"
        ) from exc
    if release.target_path != info.path:
        raise AdapterVerificationError(
            f"{info.path}: signed as {release.target_path}; the host must publish it again"
        )
    return release


def _require_header(path: Path, release: AdapterRelease) -> None:
    """The GGUF header, parsed only now, must say the base the signed release says."""
    try:
        found = adapter_identity(path).as_dict()
    except InvalidAdapterError as exc:
        raise InvalidAdapterError(
            f"{release.name}: the host signed a file that is not a LoRA adapter GGUF ({exc}); "
            "nothing was installed and the current adapter stays"
        ) from exc
    if found != release.base_identity:
        raise AdapterMismatchError(
            f"{release.name}: the file's header names another base model than its signed "
            "release; the host must export and publish it again"
        )


def _require_embedder(folder: Path, name: str) -> None:
    """Parsed only now that TUF verified every file: the spec, its hashes, the ONNX model."""
    try:
        spec_name = Embedder.open(folder).name
    except InvalidModelFileError as exc:
        raise InvalidModelFileError(
            f"the embedder {name} the host signed does not open ({exc}); nothing was installed"
        ) from exc
    if spec_name != name:
        raise AdapterVerificationError(
            f"the embedder published as {name} calls itself {spec_name}; the host must "
            "publish it under its own name"
        )


def _sync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _replace_dir(new: Path, target: Path) -> None:
    """Swap folder `new` in at `target`: an older one is moved aside first, then removed."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
