"""Master keys for the log: where each source keeps one, and how data keys are wrapped.

Every source has the same shape (``KeySource``), so creating, loading and rotating a master
key is one code path in the store whatever the source. Rotation is crash-safe because a
source *stages* the next key before the database switches to it and *promotes* it after:
at every instant either the current or the staged key opens the log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from edge_agent.errors import ConfigError, LogIntegrityError, LogKeyError

KeySourceName = Literal["auto", "keyring", "passphrase", "file"]
KEY_BYTES = 32
NONCE_BYTES = 12
KEY_FILE = "log-master.key"
_FILE_PREFIX = "edge-agent-log-master-v1:"
_KEYRING_SERVICE = "edge-agent"
_SCRYPT_R, _SCRYPT_P = 8, 1
SCRYPT_N = 2**15  # 32 MiB and ~0.1-0.3 s on a Pi-class CPU: slow to guess, fine to open
# What a log's meta may ask of scrypt: 8x the default's memory, 16x its work, at most.
_MAX_SCRYPT_MEMORY = 256 * 2**20  # scrypt takes 128 * n * r bytes
_MAX_SCRYPT_WORK = 16 * SCRYPT_N * _SCRYPT_R * _SCRYPT_P  # n * r * p
_SALT_BYTES = range(16, 65)
_DECIMAL = re.compile(r"^[0-9]{1,12}$")

log = logging.getLogger(__name__)


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def kid_of(master: bytes) -> str:
    """A public fingerprint: tells "wrong key" apart from "damaged log" without decrypting."""
    return hmac.new(master, b"edge-agent/log/kid/1", hashlib.sha256).hexdigest()[:16]


def _wrap_ad(key_id: str, period: str, master_kid: str) -> bytes:
    return f"edge-agent/log/data-key/1|{key_id}|{period}|{master_kid}".encode()


def wrap(master: bytes, data_key: bytes, key_id: str, period: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    ad = _wrap_ad(key_id, period, kid_of(master))
    return nonce + AESGCM(master).encrypt(nonce, data_key, ad)


def unwrap(master: bytes, blob: bytes, key_id: str, period: str) -> bytes:
    """The data key; raises cryptography's InvalidTag when damaged or wrapped by another key."""
    ad = _wrap_ad(key_id, period, kid_of(master))
    return AESGCM(master).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], ad)


class KeySource(Protocol):
    """Where a master key lives. ``meta`` is the log's plaintext meta table (KDF salt…)."""

    name: str

    def load(self, meta: Mapping[str, str]) -> bytes | None: ...
    def load_staged(self, meta: Mapping[str, str]) -> bytes | None: ...
    def create(self) -> tuple[bytes, dict[str, str]]: ...  # a new key + meta to record
    def save(self, key: bytes) -> bytes: ...  # first key; returns the key that won a race
    def stage(self, key: bytes) -> None: ...  # next key, before the database switches
    def promote(self, key: bytes) -> None: ...  # after the database committed the switch
    def discard_staged(self) -> None: ...


# -- file -------------------------------------------------------------------------------------
class FileKeySource:
    """A 0600 file in a 0700 dir apart from the data dir (the default on headless devices)."""

    name = "file"

    def __init__(self, key_dir: Path):
        self.path = key_dir / KEY_FILE
        self.staged = key_dir / (KEY_FILE + ".next")

    def load(self, meta: Mapping[str, str]) -> bytes | None:
        return _read_key_file(self.path)

    def load_staged(self, meta: Mapping[str, str]) -> bytes | None:
        return _read_key_file(self.staged)

    def create(self) -> tuple[bytes, dict[str, str]]:
        return new_key(), {}

    def save(self, key: bytes) -> bytes:
        tmp = self._write_tmp(key)
        try:
            os.link(tmp, self.path)  # never replaces a key that may still open some log
        except FileExistsError:
            return self.load({}) or key
        finally:
            tmp.unlink()
        _fsync_dir(self.path.parent)
        return key

    def stage(self, key: bytes) -> None:
        os.replace(self._write_tmp(key), self.staged)
        _fsync_dir(self.path.parent)

    def promote(self, key: bytes) -> None:
        os.replace(self._write_tmp(key), self.path)
        self.staged.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)

    def discard_staged(self) -> None:
        self.staged.unlink(missing_ok=True)

    def _write_tmp(self, key: bytes) -> Path:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        tmp = self.path.with_name(f".{KEY_FILE}.{os.getpid()}.{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_FILE_PREFIX + base64.urlsafe_b64encode(key).decode() + "\n")
            f.flush()
            os.fsync(f.fileno())
        return tmp


def _read_key_file(path: Path) -> bytes | None:
    try:
        text = path.read_text().strip()
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LogKeyError(f"cannot read the log key file {path}: {exc}") from exc
    if mode & 0o077:
        log.warning("log key file %s is readable by others (mode %o): chmod 600 it", path, mode)
    key = _decode_key(text.removeprefix(_FILE_PREFIX)) if text.startswith(_FILE_PREFIX) else None
    if key is None:
        raise LogKeyError(f"{path} is not an edge-agent log key file: restore it from a backup")
    return key


def _decode_key(text: str) -> bytes | None:
    try:
        key = base64.urlsafe_b64decode(text)
    except ValueError:
        return None
    return key if len(key) == KEY_BYTES else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- OS keyring -------------------------------------------------------------------------------
def keyring_available() -> bool:
    """True when python-keyring has a real backend (headless Linux usually has none)."""
    try:
        import keyring

        return float(keyring.get_keyring().priority) > 0
    except Exception as exc:  # no package, no D-Bus, a broken backend: all mean "not here"
        log.debug("no usable OS keyring, the log key goes to a file: %s", exc)
        return False


class KeyringKeySource:
    """The OS keyring (Secret Service, macOS Keychain, Windows Credential Locker)."""

    name = "keyring"

    def __init__(self, account: str):
        self.account = account
        self.staged_account = account + ".next"

    def load(self, meta: Mapping[str, str]) -> bytes | None:
        return self._get(self.account)

    def load_staged(self, meta: Mapping[str, str]) -> bytes | None:
        return self._get(self.staged_account)

    def create(self) -> tuple[bytes, dict[str, str]]:
        return new_key(), {}

    def save(self, key: bytes) -> bytes:
        existing = self._get(self.account)
        if existing is not None:
            return existing
        self._set(self.account, key)
        return key

    def stage(self, key: bytes) -> None:
        self._set(self.staged_account, key)

    def promote(self, key: bytes) -> None:
        self._set(self.account, key)
        self.discard_staged()

    def discard_staged(self) -> None:
        kr = _keyring()
        try:
            kr.delete_password(_KEYRING_SERVICE, self.staged_account)
        except kr.errors.PasswordDeleteError:
            pass  # nothing was staged
        except Exception as exc:  # backends raise their own types, as in _get/_set
            # promote() already stored this same key, so the log is fine: warn, don't fail,
            # since the leftover is a second copy of the master key.
            log.warning("the staged log key %r stays in the OS keyring (%s): delete it by hand",
                        self.staged_account, exc)  # fmt: skip

    def _get(self, account: str) -> bytes | None:
        try:
            text = _keyring().get_password(_KEYRING_SERVICE, account)
        except Exception as exc:
            raise LogKeyError(f"the OS keyring cannot be read: {exc}") from exc
        return None if text is None else _decode_key(text)

    def _set(self, account: str, key: bytes) -> None:
        try:
            encoded = base64.urlsafe_b64encode(key).decode()
            _keyring().set_password(_KEYRING_SERVICE, account, encoded)
        except Exception as exc:
            raise LogKeyError(f"the OS keyring cannot store the log key: {exc}") from exc


def _keyring() -> Any:
    try:
        import keyring
    except ImportError as exc:
        raise LogKeyError("log_key_source='keyring' needs the keyring package") from exc
    return keyring


# -- passphrase -------------------------------------------------------------------------------
class PassphraseKeySource:
    """scrypt(passphrase, salt); the salt and cost live in the log's meta table."""

    name = "passphrase"

    def __init__(self, passphrase: str, *, n: int = SCRYPT_N):
        if not passphrase:
            raise LogKeyError("the log passphrase is empty: set EDGE_AGENT_LOG_PASSPHRASE")
        if _scrypt_cost_problem(n, _SCRYPT_R, _SCRYPT_P):  # a log made here must open here
            raise ConfigError(f"scrypt n={n}: {_scrypt_cost_problem(n, _SCRYPT_R, _SCRYPT_P)}")
        self.passphrase = passphrase.encode()
        self.n = n

    def load(self, meta: Mapping[str, str]) -> bytes | None:
        if "kdf_salt" not in meta:
            return None
        return self._derive(*scrypt_params(meta))

    def load_staged(self, meta: Mapping[str, str]) -> bytes | None:
        return None  # the new salt commits atomically with the re-wrapped keys

    def create(self) -> tuple[bytes, dict[str, str]]:
        salt = os.urandom(16)
        params = {"kdf": "scrypt", "kdf_salt": base64.b64encode(salt).decode()}
        params |= {"kdf_n": str(self.n), "kdf_r": str(_SCRYPT_R), "kdf_p": str(_SCRYPT_P)}
        return self._derive(salt, self.n, _SCRYPT_R, _SCRYPT_P), params

    def save(self, key: bytes) -> bytes:
        return key

    def stage(self, key: bytes) -> None:
        pass

    def promote(self, key: bytes) -> None:
        pass

    def discard_staged(self) -> None:
        pass

    def _derive(self, salt: bytes, n: int, r: int, p: int) -> bytes:
        return Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p).derive(self.passphrase)


def scrypt_params(meta: Mapping[str, str]) -> tuple[bytes, int, int, int]:
    """(salt, n, r, p) from a log's meta, checked before scrypt sees them: the meta table is
    plaintext, and scrypt sizes its memory by n and r. LogIntegrityError if damaged."""
    if meta.get("kdf", "scrypt") != "scrypt":
        raise _damaged("kdf", meta["kdf"], "only scrypt is known")
    n, r, p = (_decimal(meta, name) for name in ("kdf_n", "kdf_r", "kdf_p"))
    problem = _scrypt_cost_problem(n, r, p)
    if problem:
        raise _damaged("kdf_n/kdf_r/kdf_p", f"{n}/{r}/{p}", problem)
    try:
        salt = base64.b64decode(meta["kdf_salt"], validate=True)
    except ValueError:
        salt = b""
    if len(salt) not in _SALT_BYTES:
        raise _damaged("kdf_salt", meta["kdf_salt"], "not base64 of 16 to 64 bytes")
    return salt, n, r, p


def _decimal(meta: Mapping[str, str], name: str) -> int:
    value = meta.get(name)
    if value is None or not _DECIMAL.match(value):  # no int() of a huge string
        raise _damaged(name, value, "not a small decimal number")
    return int(value)


def _scrypt_cost_problem(n: int, r: int, p: int) -> str | None:
    if n < 2 or n & (n - 1) or r < 1 or p < 1:
        return "n must be a power of two (at least 2), r and p at least 1"
    if 128 * n * r > _MAX_SCRYPT_MEMORY or n * r * p > _MAX_SCRYPT_WORK:
        return f"past the bounds ({_MAX_SCRYPT_MEMORY >> 20} MiB, {_MAX_SCRYPT_WORK} n*r*p)"
    return None


def _damaged(name: str, value: str | None, why: str) -> LogIntegrityError:
    shown = value if value is None or len(value) <= 40 else value[:40] + "..."
    return LogIntegrityError(
        f"its meta {name} = {shown!r} is not valid ({why}): the key cannot be derived; restore "
        "the log from a backup, or move it aside to start a new one"
    )


def make_source(
    name: str, *, key_dir: Path, db_path: Path, passphrase: str | None, scrypt_n: int = SCRYPT_N
) -> KeySource:
    """The source called ``name`` ('auto' must be resolved before)."""
    if name == "file":
        return FileKeySource(key_dir)
    if name == "keyring":
        return KeyringKeySource(f"log-master:{db_path.resolve()}")
    if name == "passphrase":
        if passphrase is None:
            raise LogKeyError(
                "the log is sealed with a passphrase: set EDGE_AGENT_LOG_PASSPHRASE "
                "(or log_passphrase), or answer the prompt on a terminal"
            )
        return PassphraseKeySource(passphrase, n=scrypt_n)
    raise LogKeyError(f"unknown log_key_source {name!r}: use auto, keyring, passphrase or file")
