"""The layer contracts in pyproject.toml hold, and catch a module that imports upward."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml")],
        cwd=root,
        check=False,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The package and its contracts, in a folder a test may break."""
    shutil.copytree(
        ROOT / "edge_agent", tmp_path / "edge_agent", ignore=shutil.ignore_patterns("data")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def plant(copy: Path, module: str, line: str) -> None:
    path = copy / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_the_package_keeps_its_layers(copy: Path) -> None:
    done = lint(copy)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # the canary takes an AdapterHost protocol, not the runtime above it
        ("edge_agent/adapters/canary.py", "from edge_agent.runtime import Runtime", "layers"),
        # the anonymizer takes words to keep, not the home skill's inventory
        ("edge_agent/anonymize/anonymizer.py", "import edge_agent.skills.home.inventory", "layers"),
        # Message, Role and Usage live in types, below the backends
        ("edge_agent/types.py", "from edge_agent.backends.base import Chunk", "layers"),
        # the device never imports the host
        ("edge_agent/server/app.py", "import edge_agent.host.ingest", "never imports the host"),
        # lifecycle works over a narrow protocol; LogStore depends on it, not the reverse
        (
            "edge_agent/logstore/lifecycle.py",
            "from edge_agent.logstore.store import LogStore",
            "one way",
        ),
    ],
)
def test_an_upward_import_breaks_a_contract(
    copy: Path, module: str, line: str, contract: str
) -> None:
    plant(copy, module, line)
    done = lint(copy)
    assert done.returncode != 0
    broken = done.stdout.split("Broken contracts", 1)[1]
    assert contract in broken and Path(module).stem in broken
