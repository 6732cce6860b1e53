"""A hub model in the store's cache is found offline; with none cached the hub client stays
unimported (cold start, issue 16: every `run` asks whether each catalog model is here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge_agent.models.catalog import CatalogEntry, load_catalog
from edge_agent.models.store import ModelStore

REPO, FILE, COMMIT = "someone/tiny-GGUF", "tiny.gguf", "a" * 40


def hub_entry() -> CatalogEntry:
    base = load_catalog().default().model_dump()
    base.update(name="hub-model", sha256="", source={"kind": "huggingface", "repo": REPO,
                                                     "file": FILE})  # fmt: skip
    return CatalogEntry.model_validate(base)


def cache_a_download(root: Path) -> Path:
    """The file laid out as huggingface_hub's downloads leave it (refs/main → snapshot)."""
    repo = root / "hf" / f"models--{REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    path = repo / "snapshots" / COMMIT / FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(b"GGUF")
    return path


def test_a_model_in_the_hub_cache_is_found(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", offline=True)
    assert store.local_path(hub_entry()) is None
    path = cache_a_download(tmp_path / "models")
    assert store.local_path(hub_entry()) == path
    assert store.is_available(hub_entry())


def test_with_nothing_cached_the_hub_client_is_not_imported(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tests.models.test_store_hub_cache import hub_entry\n"
        "from edge_agent.models.store import ModelStore\n"
        "assert ModelStore(Path(sys.argv[1])).local_path(hub_entry()) is None\n"
        "print(sorted(m for m in sys.modules if m.startswith(('huggingface_hub', 'httpx'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "models")],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.stdout.strip() == "[]", done.stderr[-2000:]
