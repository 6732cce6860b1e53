"""What a GGUF model file says about itself, read with every length checked first.

llama.cpp's own GGUF parser has had memory-safety bugs on crafted files (CVE-2024-21802 and
friends), so a file we did not build ourselves is parsed here before llama.cpp ever sees it:
every count, string length, array length, tensor shape and data offset is checked against the
bytes actually left in the file and against a hard cap. Anything off raises
`InvalidModelFileError` naming the file and the problem. Only the header is read (through
mmap), never the tensor data, so this is cheap even for multi-GB files.

Metadata stays within a memory budget: numeric arrays become numpy arrays (their size on disk,
where Python lists cost 10-16x that), string arrays are capped, and the whole metadata has a
ceiling. Shape fields must be whole numbers llama.cpp can hold, and the vocabulary must not
repeat a token (llama.cpp aborts the process on one), so a crafted file ends in this error.

The parser is our own, not the `gguf` package's reader: that one trusts the file's lengths.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.errors import InvalidModelFileError, ModelNotFoundError

__all__ = [
    "BaseModelIdentity",
    "GGUFHeader",
    "TensorInfo",
    "identity_of",
    "read_header",
    "sha256_file",
]

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
# Caps far above any real model (SmolLM2: 272 tensors, ~30 keys, 49k tokens) yet small enough
# that a lying header cannot make us loop or allocate for long.
MAX_TENSORS = 1 << 16
MAX_KV = 1 << 16
MAX_STRING = 1 << 24
# Memory budgets for metadata (a 262k-token vocabulary with merges needs about 40 MB of it).
MAX_ARRAY_BYTES = 64 << 20  # one numeric array
MAX_STRING_ARRAY = 1 << 20  # strings in one array
MAX_METADATA_BYTES = 128 << 20  # all metadata, as held in memory
_STR_OVERHEAD = 64  # a Python str object plus its list slot, beyond the characters
_U64 = struct.Struct("<Q")
MAX_SHAPE = (1 << 32) - 1  # llama.cpp holds shape fields in uint32
# Shape fields, under "{arch}.", and the most each may be: the fit plan's memory estimate
# multiplies and divides by them, llama.cpp aborts the process past LLAMA_MAX_LAYERS (512) and
# LLAMA_MAX_EXPERTS (1024), and llama-cpp-python allocates context_length token slots on every
# tokenize call (and fails at 2**31 or more).
SHAPE_LIMITS = {
    "block_count": 512, "context_length": 1 << 24, "expert_count": 1024,
    "expert_used_count": 1024, "embedding_length": MAX_SHAPE, "feed_forward_length": MAX_SHAPE,
    "vocab_size": MAX_SHAPE, "attention.head_count": MAX_SHAPE,
    "attention.head_count_kv": MAX_SHAPE, "attention.key_length": MAX_SHAPE,
    "attention.value_length": MAX_SHAPE,
}  # fmt: skip
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME = 63  # GGML_MAX_NAME - 1; llama.cpp rejects longer names
_HEADER_MIN = 4 + 4 + 8 + 8

# GGUF metadata value types → struct code for the fixed-size ones.
_STRING, _ARRAY = 8, 9
_TOKENS = "tokenizer.ggml.tokens"
_SCALARS: dict[int, str] = {
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d",
}  # fmt: skip

# ggml type id → (name, elements per block, bytes per block), as in ggml.c's type_traits.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}  # fmt: skip

# Numeric arrays are read-only numpy arrays; string arrays are lists.
MetadataValue = int | float | bool | str | list[str] | npt.NDArray[Any]


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in the header. `shape` is in numpy/torch order (outermost first),
    i.e. ggml's `ne` reversed; `offset` is the absolute byte offset of its data in the file."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    nbytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.ggml_type][0]


@dataclass(frozen=True)
class GGUFHeader:
    """Everything before the tensor data: metadata key/values and the tensor table."""

    path: Path
    version: int
    metadata: dict[str, MetadataValue]
    tensors: tuple[TensorInfo, ...]
    file_size: int
    alignment: int
    data_offset: int

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    @property
    def chat_templates(self) -> list[str]:
        """Every template the file carries: the default and the named ``.NAME`` ones."""
        key = "tokenizer.chat_template"
        return [
            v
            for k, v in self.metadata.items()
            if (k == key or k.startswith(key + ".")) and isinstance(v, str)
        ]

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def tensor(self, name: str) -> TensorInfo | None:
        return next((t for t in self.tensors if t.name == name), None)


@dataclass(frozen=True)
class BaseModelIdentity:
    """Which base model a file belongs to: equal for every quantization of one base model
    (nothing here depends on the file type), different for any other model."""

    architecture: str
    base_name: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_vocab: int

    def as_dict(self) -> dict[str, str | int]:
        return asdict(self)

    def differences(self, other: BaseModelIdentity) -> list[str]:
        """`field: ours != theirs` for every field that differs, for error messages."""
        ours, theirs = self.as_dict(), other.as_dict()
        return [f"{k}: {ours[k]!r} != {theirs[k]!r}" for k in ours if ours[k] != theirs[k]]


def read_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Parse and validate a GGUF file's header; raise InvalidModelFileError if anything is off."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _HEADER_MIN:
                raise InvalidModelFileError(
                    f"{path}: only {size} bytes, too short to be a GGUF model; "
                    "download or export it again"
                )
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(_Cursor(buf, path), path, size)
    except FileNotFoundError as e:
        raise ModelNotFoundError(f"{path}: no such model file") from e
    except OSError as e:
        raise InvalidModelFileError(f"{path}: cannot be read ({e.strerror or e})") from e


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks so multi-GB models need no memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def identity_of(header: GGUFHeader) -> BaseModelIdentity:
    """The base-model identity of a model file (not an adapter: see adapters.adapter_identity)."""
    arch = header.architecture
    if not arch:
        raise _bad(header.path, "has no general.architecture; it is not a usable model")
    n_head = _positive(header, f"{arch}.attention.head_count")
    kv_heads = f"{arch}.attention.head_count_kv"
    return BaseModelIdentity(
        architecture=arch,
        base_name=_base_name(header),
        n_layer=_positive(header, f"{arch}.block_count"),
        n_embd=_positive(header, f"{arch}.embedding_length"),
        n_ff=_optional_int(header, f"{arch}.feed_forward_length") or 0,
        n_head=n_head,
        n_head_kv=_positive(header, kv_heads) if kv_heads in header.metadata else n_head,
        n_vocab=_vocab_size(header),
    )


# --- identity helpers -------------------------------------------------------------------------

# A quant/file-type suffix some tools bake into general.name ("…-Q4_K_M", "… f16").
_QUANT_SUFFIX = re.compile(r"[\s_.-]+(?:i?q\d\w*|f16|f32|bf16|gguf)$", re.IGNORECASE)


def _base_name(header: GGUFHeader) -> str:
    for key in ("general.basename", "general.name"):
        value = header.metadata.get(key)
        if isinstance(value, str) and value.strip():
            name = " ".join(value.lower().split())
            while (stripped := _QUANT_SUFFIX.sub("", name)) != name:
                name = stripped
            return name
    return ""


def _optional_int(header: GGUFHeader, key: str) -> int | None:
    value = header.metadata.get(key)
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
        # per-layer values (e.g. OpenELM): the widest one
        return int(value.max()) if value.size else None
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(header.path, f"metadata {key} is {value!r}, expected an integer")
    return value


def _positive(header: GGUFHeader, key: str) -> int:
    # The memory estimate divides by these; 0 is also how recurrent models (Mamba, RWKV) say
    # "no attention", and those are not models edge-agent runs.
    value = _required_int(header, key)
    if value < 1:
        raise _bad(header.path, f"metadata {key} is {value}; an attention model needs at least 1")
    return value


def _required_int(header: GGUFHeader, key: str) -> int:
    value = _optional_int(header, key)
    if value is None:
        raise _bad(header.path, f"lacks metadata {key}, which every model of its kind has")
    return value


def _vocab_size(header: GGUFHeader) -> int:
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list) and tokens:
        return len(tokens)
    embd = header.tensor("token_embd.weight")
    if embd is not None:
        return embd.shape[0]
    return _optional_int(header, f"{header.architecture}.vocab_size") or 0


# --- the parser -------------------------------------------------------------------------------


def _bad(path: Path, what: str) -> InvalidModelFileError:
    return InvalidModelFileError(f"{path}: {what}")


class _Cursor:
    """A read position over the mapped file that refuses to step past its end."""

    def __init__(self, buf: mmap.mmap, path: Path) -> None:
        self.buf, self.path, self.pos = buf, path, 0
        self.held = 0  # bytes the metadata read so far takes in memory (estimated)

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def fail(self, what: str) -> InvalidModelFileError:
        return InvalidModelFileError(
            f"{self.path}: {what} (at byte {self.pos}); the file is corrupt or not a GGUF "
            "model: download or export it again"
        )

    def skip(self, n: int, what: str) -> int:
        """Step over `n` bytes; returns where they start."""
        if n > self.remaining:
            raise self.fail(f"truncated: {what} needs {n} bytes, only {self.remaining} left")
        self.pos += n
        return self.pos - n

    def take(self, n: int, what: str) -> bytes:
        start = self.skip(n, what)
        return self.buf[start : self.pos]

    def charge(self, nbytes: int) -> None:
        self.held += nbytes
        if self.held > MAX_METADATA_BYTES:
            raise self.fail(
                f"the metadata needs more than its budget of {MAX_METADATA_BYTES >> 20} MiB "
                "in memory"
            )

    def unpack(self, code: str, what: str, count: int = 1) -> tuple[Any, ...]:
        size = struct.calcsize(f"<{count}{code}")
        return struct.unpack(f"<{count}{code}", self.take(size, what))

    def u32(self, what: str) -> int:
        return int(self.unpack("I", what)[0])

    def u64(self, what: str) -> int:
        return int(self.unpack("Q", what)[0])

    def count(self, what: str, cap: int, min_item_size: int) -> int:
        n = self.u64(what)
        if n > cap or n * min_item_size > self.remaining:
            raise self.fail(f"{what} is {n}, more than the file can hold")
        return n

    def raw_string(self, what: str) -> bytes:
        n = self.count(f"length of {what}", MAX_STRING, 1)
        self.charge(n + _STR_OVERHEAD)
        return self.take(n, what)

    def raw_strings(self, n: int, what: Callable[[int], str]) -> Iterator[bytes]:
        """``raw_string`` n times, its checks inline: a vocabulary is ~50k strings on every
        model load. A string that fails them goes through ``raw_string`` for its error."""
        buf, end = self.buf, len(self.buf)
        for j in range(n):
            start = self.pos + 8
            size = _U64.unpack_from(buf, self.pos)[0] if start <= end else MAX_STRING + 1
            held = self.held + size + _STR_OVERHEAD
            if size > MAX_STRING or start + size > end or held > MAX_METADATA_BYTES:
                yield self.raw_string(what(j))  # raises
                continue
            self.pos, self.held = start + size, held
            yield buf[start : self.pos]

    def string(self, what: str) -> str:
        # llama.cpp does not insist on UTF-8 either (some vocabularies hold raw bytes).
        return _text(self.raw_string(what))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _parse(cur: _Cursor, path: Path, size: int) -> GGUFHeader:
    magic = cur.take(4, "magic")
    if magic != MAGIC:
        raise _bad(path, f"starts with {magic!r}, not b'GGUF'; it is not a GGUF model file")
    version = cur.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise _bad(path, f"is GGUF version {version}; only versions 2 and 3 are supported")
    # A tensor entry is at least 8+1 (name) + 4 + 8 + 4 + 8 bytes; a key/value at least 8+1+4+1.
    n_tensors = cur.count("tensor count", MAX_TENSORS, 33)
    n_kv = cur.count("metadata count", MAX_KV, 14)
    metadata = _read_metadata(cur, n_kv)
    _check_shapes(path, metadata)
    alignment = _alignment(cur, metadata)
    entries = [_read_tensor_entry(cur, i) for i in range(n_tensors)]
    data_offset = -(-cur.pos // alignment) * alignment
    tensors = _place_tensors(cur, entries, data_offset, alignment, size)
    return GGUFHeader(path, version, metadata, tensors, size, alignment, data_offset)


def _read_metadata(cur: _Cursor, n_kv: int) -> dict[str, MetadataValue]:
    metadata: dict[str, MetadataValue] = {}
    for i in range(n_kv):
        key = cur.string(f"key of metadata entry {i}")
        if key in metadata:
            raise cur.fail(f"metadata key {key!r} appears twice")
        metadata[key] = _read_value(cur, cur.u32(f"type of {key!r}"), key)
    return metadata


def _read_value(cur: _Cursor, vtype: int, key: str) -> MetadataValue:
    if vtype in _SCALARS:
        value = cur.unpack(_SCALARS[vtype], f"value of {key!r}")[0]
        return bool(value) if vtype == 7 else value
    if vtype == _STRING:
        return cur.string(f"value of {key!r}")
    if vtype == _ARRAY:
        return _read_array(cur, key)
    raise cur.fail(f"metadata {key!r} has unknown value type {vtype}")


def _read_array(cur: _Cursor, key: str) -> list[str] | npt.NDArray[Any]:
    etype = cur.u32(f"element type of {key!r}")
    if etype in _SCALARS:
        return _numeric_array(cur, key, np.dtype("<" + _SCALARS[etype]))
    if etype == _STRING:
        return _string_array(cur, key)
    # Nested arrays are legal GGUF but llama.cpp refuses them, so nothing we run uses them.
    raise cur.fail(f"array {key!r} has unsupported element type {etype}")


def _numeric_array(cur: _Cursor, key: str, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    n = cur.u64(f"length of array {key!r}")
    if n * dtype.itemsize > MAX_ARRAY_BYTES:
        raise cur.fail(
            f"array {key!r} has {n} elements, over the budget of {MAX_ARRAY_BYTES >> 20} MiB "
            "for one array"
        )
    start = cur.skip(n * dtype.itemsize, f"array {key!r}")
    cur.charge(n * dtype.itemsize)
    # Copied straight out of the map: no bytes object, no Python number per element.
    view = np.frombuffer(cur.buf, dtype=dtype, count=n, offset=start)
    values = view != 0 if dtype.kind == "b" else view.copy()
    del view  # the map cannot close while a view of it lives
    values.flags.writeable = False
    return values


def _string_array(cur: _Cursor, key: str) -> list[str]:
    n = cur.count(f"length of array {key!r}", MAX_ARRAY_BYTES, 8)
    if n > MAX_STRING_ARRAY:
        raise cur.fail(f"array {key!r} has {n} strings, over the budget of {MAX_STRING_ARRAY}")
    if key != _TOKENS:
        return [_text(raw) for raw in cur.raw_strings(n, lambda j: f"element {j} of {key!r}")]
    # llama.cpp reads tokens as C strings (cut at NUL, "" renamed) and aborts on duplicates.
    tokens, seen = [], set()
    for j, raw in enumerate(cur.raw_strings(n, lambda j: f"token {j}")):
        name = raw.split(b"\0", 1)[0] or f"[EMPTY_{j}]".encode()
        if name in seen:
            raise cur.fail(f"token {j} ({name[:40]!r}) repeats an earlier token")
        seen.add(name)
        tokens.append(_text(raw))
    return tokens


def _check_shapes(path: Path, metadata: dict[str, MetadataValue]) -> None:
    """Shape fields are whole numbers within llama.cpp's limits (0 allowed here: identity_of
    refuses it for the fields a model needs), and experts come with experts used."""
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        return
    widest = {
        suffix: _shape(path, f"{arch}.{suffix}", metadata, most)
        for suffix, most in SHAPE_LIMITS.items()
    }
    experts, used = widest["expert_count"], widest["expert_used_count"]
    if used > experts or (experts > 0) != (used > 0):
        raise _bad(path, f"uses {used} of {experts} experts; llama.cpp needs 0 of 0 or 1..n of n")


def _shape(path: Path, key: str, metadata: dict[str, MetadataValue], most: int) -> int:
    """The field's value (the widest layer's, for per-layer values); 0 when absent."""
    value = metadata.get(key)
    if value is None:
        return 0
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu" and value.size:
        low, high = int(value.min()), int(value.max())
    elif isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    else:
        raise _bad(path, f"metadata {key} is {value!r:.80}, not a whole number")
    if low < 0 or high > most:
        raise _bad(path, f"metadata {key} is {value!r:.80}, outside 0..{most}")
    return high


def _alignment(cur: _Cursor, metadata: dict[str, MetadataValue]) -> int:
    value = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 1 << 16:
        raise cur.fail(f"general.alignment is {value!r}, not a power of two")
    if value & (value - 1):
        raise cur.fail(f"general.alignment is {value}, not a power of two")
    return value


def _read_tensor_entry(cur: _Cursor, i: int) -> tuple[str, tuple[int, ...], int, int]:
    name = cur.string(f"name of tensor {i}")
    if not name or len(name.encode()) > MAX_TENSOR_NAME:
        raise cur.fail(f"tensor {i} has an empty or over-long name {name[:80]!r}")
    n_dims = cur.u32(f"dimension count of {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
    ne = cur.unpack("Q", f"dimensions of {name!r}", n_dims)
    if any(d == 0 for d in ne):
        raise cur.fail(f"tensor {name!r} has a zero dimension {ne}")
    ggml_type = cur.u32(f"type of {name!r}")
    if ggml_type not in GGML_TYPES:
        raise cur.fail(f"tensor {name!r} has unknown ggml type {ggml_type}")
    offset = cur.u64(f"data offset of {name!r}")
    return name, tuple(reversed(ne)), ggml_type, offset


def _tensor_nbytes(cur: _Cursor, name: str, shape: tuple[int, ...], ggml_type: int) -> int:
    type_name, block, block_bytes = GGML_TYPES[ggml_type]
    row = shape[-1]  # ggml ne[0]: the contiguous dimension, quantized in whole blocks
    if row % block:
        raise cur.fail(f"tensor {name!r} rows of {row} do not fit {type_name} blocks of {block}")
    n = row // block * block_bytes
    for d in shape[:-1]:
        n *= d
        if n > len(cur.buf):  # stop early: a lying shape must not build a huge integer
            break
    return n


def _place_tensors(
    cur: _Cursor,
    entries: list[tuple[str, tuple[int, ...], int, int]],
    data_offset: int,
    alignment: int,
    size: int,
) -> tuple[TensorInfo, ...]:
    seen: set[str] = set()
    tensors = []
    for name, shape, ggml_type, rel in entries:
        if name in seen:
            raise cur.fail(f"tensor {name!r} appears twice")
        seen.add(name)
        nbytes = _tensor_nbytes(cur, name, shape, ggml_type)
        if rel % alignment or data_offset + rel + nbytes > size:
            raise cur.fail(
                f"tensor {name!r} data ({nbytes} bytes at offset {rel}) lies outside the file "
                f"({size} bytes, data starts at {data_offset}) or is misaligned"
            )
        tensors.append(TensorInfo(name, shape, ggml_type, data_offset + rel, nbytes))
    _check_no_overlap(cur, tensors)
    return tuple(tensors)


def _check_no_overlap(cur: _Cursor, tensors: list[TensorInfo]) -> None:
    ordered = sorted(tensors, key=lambda t: t.offset)
    for before, after in zip(ordered, ordered[1:], strict=False):
        if before.offset + before.nbytes > after.offset:
            raise cur.fail(f"tensors {before.name!r} and {after.name!r} overlap")
