"""A Hugging Face byte-level BPE tokenizer (tokenizer.json) as GGUF ``tokenizer.*`` metadata.

Only what llama.cpp's "gpt2" tokenizer model reads: tokens in id order, their types, the
merges, special token ids and the chat template. Other tokenizer kinds (SentencePiece,
WordPiece) are not converted: such a base can still become ONNX, just not GGUF.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gguf import GGUFValueType, TokenType

from edge_agent.errors import QuantizeError
from quantize.gguf_writer import MetadataField, TokenizerSpec

__all__ = ["tokenizer_from_hf"]


def tokenizer_from_hf(folder: Path, pre: str = "gpt-2") -> TokenizerSpec | None:
    """The GGUF tokenizer of ``folder``, or None when it is not a byte-level BPE.

    ``pre`` names llama.cpp's pre-tokenizer (how text is split before BPE): "gpt-2" fits
    GPT-2-style models; others (e.g. "smollm", "llama-bpe") need naming here."""
    path = folder / "tokenizer.json"
    if not path.exists():
        return None
    spec = json.loads(path.read_text(encoding="utf-8"))
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        return None
    tokens, types = _tokens(model["vocab"], spec.get("added_tokens") or [])
    config = _read_json(folder / "tokenizer_config.json")
    ids = {t: i for i, t in enumerate(tokens)}
    fields = _base_fields(tokens, types, _merges(model.get("merges") or []), pre)
    for key, name in (("bos", "bos_token"), ("eos", "eos_token"), ("padding", "pad_token")):
        token = _token_text(config.get(name))
        if token in ids:
            fields[f"tokenizer.ggml.{key}_token_id"] = MetadataField(
                ids[token], GGUFValueType.UINT32
            )
    fields["tokenizer.ggml.add_bos_token"] = MetadataField(
        bool(config.get("add_bos_token", False)), GGUFValueType.BOOL
    )
    template = _chat_template(folder, config)
    if template:
        fields["tokenizer.chat_template"] = MetadataField(template, GGUFValueType.STRING)
    return TokenizerSpec(fields)


def _tokens(vocab: dict[str, int], added: list[dict[str, Any]]) -> tuple[list[str], list[int]]:
    by_id = {int(i): t for t, i in vocab.items()}
    kinds = {int(i): int(TokenType.NORMAL) for i in by_id}
    for token in added:
        by_id[int(token["id"])] = token["content"]
        special = token.get("special", False)
        kinds[int(token["id"])] = int(TokenType.CONTROL if special else TokenType.USER_DEFINED)
    n = max(by_id) + 1
    if len(by_id) != n:
        raise QuantizeError(f"tokenizer.json leaves {n - len(by_id)} token ids unassigned")
    return [by_id[i] for i in range(n)], [kinds[i] for i in range(n)]


def _merges(merges: list[Any]) -> list[str]:
    # tokenizers >= 0.20 writes each merge as a pair; older files as "a b".
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def _base_fields(
    tokens: list[str], types: list[int], merges: list[str], pre: str
) -> dict[str, MetadataField]:
    string, array = GGUFValueType.STRING, GGUFValueType.ARRAY
    return {
        "tokenizer.ggml.model": MetadataField("gpt2", string),
        "tokenizer.ggml.pre": MetadataField(pre, string),
        "tokenizer.ggml.tokens": MetadataField(tokens, array, string),
        "tokenizer.ggml.token_type": MetadataField(types, array, GGUFValueType.INT32),
        "tokenizer.ggml.merges": MetadataField(merges, array, string),
    }


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # transformers may save AddedToken objects as dicts
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(folder: Path, config: dict[str, Any]) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    template = config.get("chat_template")
    return template if isinstance(template, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}
