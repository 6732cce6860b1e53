"""Embedders for tests: a tiny random BERT folder, and the real MiniLM exported once a session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

_TEXT = """turn on off the kitchen light lamp bedroom fan what is weather today tomorrow rain
play music song volume set timer alarm minutes please cpu temperature memory disk"""
WORDS = _TEXT.split()


def make_tiny_bert(folder: Path, *, max_length: int = 16) -> Path:
    """A 1-layer, 16-wide random BERT with a WordPiece tokenizer over `WORDS`, HF layout."""
    import torch
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length}))
    return folder


def minilm_export(factory: pytest.TempPathFactory) -> Path:
    """The real all-MiniLM-L6-v2 as int8 ONNX, exported once per test session (~10 s)."""
    from quantize.embedder import export_embedder

    folder = factory.getbasetemp() / "minilm-int8"
    if not (folder / "embedder.json").is_file():
        export_embedder(folder)
    return folder
