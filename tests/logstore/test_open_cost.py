"""Opening an up-to-date log reads its migrations with plain SQL: sqlite_utils (~20 ms to
import, every `edge-agent run`) loads only for a new or older log or a read that uses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlite_utils import Database

from edge_agent.logstore import LogStore
from edge_agent.logstore.config import MIGRATIONS
from edge_agent.logstore.migrations import migrations
from tests.logstore_support import make_config, raw

OPEN_AND_RECORD = (
    "import sys\n"
    "from pathlib import Path\n"
    "from edge_agent.logstore import LogStore\n"
    "from tests.logstore_support import make_config, make_messages, make_result\n"
    "store = LogStore(make_config(Path(sys.argv[1])))\n"
    "result = make_result(int(sys.argv[2]))\n"
    "store.record(result, messages=make_messages(result))\n"
    "store.close()\n"
    "print('sqlite_utils' in sys.modules)\n"
)


def _open_and_record(root: Path, i: int) -> bool:
    """Whether a fresh process that opened the log and recorded a turn imported sqlite_utils."""
    done = subprocess.run([sys.executable, "-c", OPEN_AND_RECORD, str(root), str(i)],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip() == "True"


def test_the_names_are_every_migration() -> None:
    assert {m.name for m in migrations.pending(Database(memory=True))} == MIGRATIONS


def test_an_up_to_date_log_opens_and_records_without_sqlite_utils(tmp_path: Path) -> None:
    assert _open_and_record(tmp_path, 0)  # a new log is migrated
    assert not _open_and_record(tmp_path, 1)
    with LogStore(make_config(tmp_path)) as store:
        assert len(store.rows()) == 2


def test_a_log_missing_a_migration_gets_it_on_open(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    LogStore(config).close()
    with raw(config) as conn:
        conn.execute("DROP TABLE toolsets")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm002_toolsets'")
    LogStore(config).close()
    with raw(config) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        applied = {row[0] for row in conn.execute("SELECT name FROM _sqlite_migrations")}
    assert "toolsets" in tables and applied == MIGRATIONS
