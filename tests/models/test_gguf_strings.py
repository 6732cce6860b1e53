"""String arrays in a GGUF header (a vocabulary is ~50k of them, read on every model load):
every string is checked, and a bad one is named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import InvalidModelFileError
from edge_agent.models import gguf as gguf_module
from edge_agent.models.gguf import read_header
from tests.models.test_gguf import ARCH, _gguf, _kv, _str, _u32, _u64, _write

TOKENS = "tokenizer.ggml.tokens"


def _strings(key: str, items: list[bytes], n: int | None = None) -> bytes:
    body = b"".join(_u64(len(item)) + item for item in items)
    return _kv(key, 9, _u32(8) + _u64(len(items) if n is None else n) + body)


def test_strings_are_read_as_text(tmp_path: Path) -> None:
    items = [b"plain", "caf\u00e9".encode(), b"bad \xff byte", b"", b"nul\0inside"]
    path = _write(tmp_path, _gguf(kvs=(ARCH, _strings("s", items))))
    values = read_header(path).metadata["s"]
    assert values == ["plain", "caf\u00e9", "bad \ufffd byte", "", "nul\0inside"]


@pytest.mark.parametrize(("key", "name"), [("s", "element 2 of 's'"), (TOKENS, "token 2")])
def test_a_string_longer_than_the_file_is_named(tmp_path: Path, key: str, name: str) -> None:
    body = _strings(key, [b"a", b"b"], n=3) + _u64(1 << 20) + b"short"
    path = _write(tmp_path, _gguf(kvs=(ARCH, body)))
    with pytest.raises(InvalidModelFileError, match=f"length of {name} is 1048576, more than"):
        read_header(path)


def test_a_file_cut_inside_a_length_is_truncated(tmp_path: Path) -> None:
    blob = _gguf(kvs=(ARCH, _strings("s", [b"a" * 20, b"b" * 20, b"c"])))
    cut = blob.index(_str("c")) + 4
    with pytest.raises(InvalidModelFileError, match="truncated: length of element 2 of 's'"):
        read_header(_write(tmp_path, blob[:cut]))


def test_a_string_over_the_length_cap_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gguf_module, "MAX_STRING", 30)  # the keys are shorter
    path = _write(tmp_path, _gguf(kvs=(ARCH, _strings("s", [b"x" * 30, b"y" * 31]))))
    with pytest.raises(InvalidModelFileError, match="length of element 1 of 's' is 31"):
        read_header(path)


def test_strings_count_towards_the_metadata_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gguf_module, "MAX_METADATA_BYTES", 2_000)
    few = _write(tmp_path, _gguf(kvs=(ARCH, _strings("s", [b"x" * 100] * 5))), "few.gguf")
    assert len(read_header(few).metadata["s"]) == 5
    many = _write(tmp_path, _gguf(kvs=(ARCH, _strings("s", [b"x" * 100] * 20))))
    with pytest.raises(InvalidModelFileError, match="metadata.*budget"):
        read_header(many)
