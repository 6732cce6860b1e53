"""The ONNX sentence embedder: export (quantize/embedder.py) and use (routing/embed.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import InvalidModelFileError
from edge_agent.routing.embed import Embedder, sha256_file
from quantize.embedder import default_embedder_dir, export_embedder, open_or_export
from tests.embed_support import make_tiny_bert, minilm_export


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_fp32(tiny_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_embedder(tmp_path_factory.mktemp("exp") / "fp32", source=tiny_source,
                           quantize=False)  # fmt: skip


@pytest.fixture(scope="session")
def tiny_int8(tiny_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_embedder(tmp_path_factory.mktemp("exp") / "int8", source=tiny_source)


@pytest.fixture
def broken(tiny_int8: Path, tmp_path: Path) -> Path:
    """A private copy of the int8 folder for a test to damage."""
    return Path(shutil.copytree(tiny_int8, tmp_path / "embedder"))


def _reference(source: Path, texts: list[str]) -> np.ndarray:
    """Mean-pooled, normalised embeddings computed with torch, as sentence-transformers does."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    model = AutoModel.from_pretrained(source).eval()
    rows = []
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text).ids[:16]])
        with torch.no_grad():
            hidden = model(input_ids=ids).last_hidden_state[0].mean(dim=0).numpy()
        rows.append(hidden / np.linalg.norm(hidden))
    return np.stack(rows)


# --- export --------------------------------------------------------------------------------


def test_export_writes_a_verified_folder(
    tiny_source: Path, tiny_int8: Path, tiny_fp32: Path
) -> None:
    assert sorted(p.name for p in tiny_int8.iterdir()) == [
        "embedder.json", "model.onnx", "tokenizer.json"
    ]  # fmt: skip
    spec = json.loads((tiny_int8 / "embedder.json").read_text())
    assert spec["name"] == f"{tiny_source.name}-int8"
    assert (spec["dim"], spec["max_length"], spec["pooling"]) == (16, 16, "mean")
    assert spec["quantization"] == "int8-dynamic"
    assert spec["sha256"] == sha256_file(tiny_int8 / "model.onnx")
    assert spec["tokenizer_sha256"] == sha256_file(tiny_int8 / "tokenizer.json")
    assert json.loads((tiny_fp32 / "embedder.json").read_text())["quantization"] == "none"


def test_export_replaces_an_existing_folder_and_leaves_no_temporaries(
    tiny_source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "e"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    export_embedder(out, source=tiny_source, name="mine")
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "embedder.json").read_text())["name"] == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["e"]


def test_default_dir_lives_under_the_host_dir(tmp_path: Path) -> None:
    assert default_embedder_dir(tmp_path) == tmp_path / "embedders" / "all-minilm-l6-v2-int8"


# --- embedding -----------------------------------------------------------------------------


def test_fp32_export_matches_torch_mean_pooling(tiny_source: Path, tiny_fp32: Path) -> None:
    texts = ["turn on the kitchen light", "weather", "set a timer for minutes please"]
    got = Embedder.open(tiny_fp32).embed(texts)
    np.testing.assert_allclose(got, _reference(tiny_source, texts), atol=1e-4)


def test_int8_stays_close_to_fp32(tiny_fp32: Path, tiny_int8: Path) -> None:
    texts = ["turn on the kitchen light", "play music", "what is the cpu temperature"]
    cos = (Embedder.open(tiny_fp32).embed(texts) * Embedder.open(tiny_int8).embed(texts)).sum(1)
    assert cos.min() > 0.9


def test_batches_keep_order_and_padding_does_not_leak(tiny_fp32: Path) -> None:
    texts = ["turn the bedroom lamp off please", "fan", "what is the weather tomorrow", "rain"]
    batched = Embedder.open(tiny_fp32, batch_size=3).embed(texts)
    one_by_one = np.concatenate([Embedder.open(tiny_fp32).embed([t]) for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert batched.dtype == np.float32 and batched.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_long_texts_are_truncated_to_max_length(tiny_fp32: Path) -> None:
    embedder = Embedder.open(tiny_fp32)
    head = " ".join(["light"] * 30)
    a, b = embedder.embed([head, head + " music music music"])
    np.testing.assert_allclose(a, b, atol=1e-6)  # both cut at 16 tokens


def test_empty_input_and_a_bare_string(tiny_int8: Path) -> None:
    embedder = Embedder.open(tiny_int8)
    assert embedder.embed([]).shape == (0, 16)
    with pytest.raises(TypeError):
        embedder.embed("not a list")


def test_threads_are_configurable(tiny_int8: Path) -> None:
    assert Embedder.open(tiny_int8).session.get_session_options().intra_op_num_threads == 1
    opened = Embedder.open(tiny_int8, threads=2)
    assert opened.session.get_session_options().intra_op_num_threads == 2


def test_the_device_side_never_imports_torch(tiny_int8: Path) -> None:
    code = (
        "import sys; from edge_agent.routing.embed import Embedder; "
        f"Embedder.open({str(tiny_int8)!r}).embed(['turn on the light']); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_open_or_export_exports_only_when_missing(
    tiny_int8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def fake_export(folder: Path) -> Path:
        calls.append(folder)
        return Path(shutil.copytree(tiny_int8, folder))

    monkeypatch.setattr("quantize.embedder.export_embedder", fake_export)
    assert open_or_export(tmp_path / "e").dim == 16
    assert open_or_export(tmp_path / "e").dim == 16
    assert calls == [tmp_path / "e"]


def test_cli_exports_to_the_default_host_dir(
    tiny_source: Path, edge_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from edge_agent.cli import cli

    monkeypatch.setattr("quantize.embedder.minilm_folder", lambda: tiny_source)
    result = CliRunner().invoke(cli, ["host", "embedder", "export", "--json"])
    assert result.exit_code == 0, result.output
    spec = json.loads(result.output)
    assert spec["name"] == "all-minilm-l6-v2-int8" and spec["dim"] == 16
    assert Path(spec["folder"]).is_relative_to(edge_home / "data" / "host")
    assert Embedder.open(spec["folder"]).embed(["light"]).shape == (1, 16)


# --- bad folders ---------------------------------------------------------------------------


def test_missing_model_is_refused(broken: Path) -> None:
    (broken / "model.onnx").unlink()
    with pytest.raises(InvalidModelFileError, match=r"model\.onnx is missing.*re-export"):
        Embedder.open(broken)


def test_missing_spec_is_refused(broken: Path) -> None:
    (broken / "embedder.json").unlink()
    with pytest.raises(InvalidModelFileError, match=r"embedder\.json is missing"):
        Embedder.open(broken)


def test_corrupted_bytes_are_refused_before_parsing(broken: Path) -> None:
    data = bytearray((broken / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(InvalidModelFileError, match="does not match the sha256"):
        Embedder.open(broken)


def test_hash_mismatch_in_the_spec_is_refused(broken: Path) -> None:
    spec = json.loads((broken / "embedder.json").read_text())
    (broken / "embedder.json").write_text(json.dumps(spec | {"sha256": "0" * 64}))
    with pytest.raises(InvalidModelFileError, match="does not match the sha256"):
        Embedder.open(broken)


def test_tampered_tokenizer_is_refused(broken: Path) -> None:
    with (broken / "tokenizer.json").open("a") as f:
        f.write(" ")
    with pytest.raises(InvalidModelFileError, match=r"tokenizer\.json does not match"):
        Embedder.open(broken)


def test_garbage_model_with_a_matching_hash_is_refused(broken: Path) -> None:
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    spec = json.loads((broken / "embedder.json").read_text())
    spec["sha256"] = sha256_file(broken / "model.onnx")
    (broken / "embedder.json").write_text(json.dumps(spec))
    with pytest.raises(InvalidModelFileError, match="onnxruntime cannot load"):
        Embedder.open(broken)


@pytest.mark.parametrize(
    "change",
    [{"dim": 17}, {"pooling": "max"}, {"dim": "wide"}, {"name": None, "sha256": None}],
)
def test_a_spec_that_does_not_fit_the_model_is_refused(broken: Path, change: dict) -> None:
    spec = json.loads((broken / "embedder.json").read_text())
    spec = {k: v for k, v in (spec | change).items() if v is not None}
    (broken / "embedder.json").write_text(json.dumps(spec))
    with pytest.raises(InvalidModelFileError, match="embedder.json|dim"):
        Embedder.open(broken)


# --- the real all-MiniLM-L6-v2 ---------------------------------------------------------------


@pytest.mark.integration
def test_minilm_int8_ranks_paraphrases_above_unrelated(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    embedder = Embedder.open(minilm_export(tmp_path_factory))
    assert (embedder.name, embedder.dim) == ("all-minilm-l6-v2-int8", 384)
    a, b, c, d = embedder.embed([
        "turn on the kitchen light",
        "switch the lights in the kitchen on",
        "what will the weather be tomorrow",
        "is it going to rain tomorrow",
    ])  # fmt: skip
    assert a @ b > a @ c + 0.2 and a @ b > a @ d + 0.2
    assert c @ d > c @ a + 0.2
