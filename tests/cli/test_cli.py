import io
import json
import os
import subprocess
import sys

import pytest

from edge_agent import runtime
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.models.catalog import load_catalog
from edge_agent.models.plan import make_plan
from edge_agent.models.store import ModelStore
from tests.cli_support import run_cli


@pytest.fixture
def scripted_model(monkeypatch):
    """The real runtime (its log included) on a ScriptedBackend instead of the model file."""
    monkeypatch.setenv("EDGE_AGENT_LOG_KEY_SOURCE", "file")
    backend = ScriptedBackend(["Paris is the capital."] * 4)

    def open_runtime(settings):
        plan = make_plan(settings, load_catalog(), ModelStore(settings.models_dir, offline=True))
        return runtime.Runtime(settings, plan, backend)

    monkeypatch.setattr(runtime, "open_runtime", open_runtime)
    return backend


def logged_requests(capsys):
    code, out, err = run_cli(capsys, "log", "list", "--json")
    assert code == 0, err
    return [row["request"] for row in json.loads(out)]


def test_run_tools_none_is_plain_chat_and_logged(capsys, scripted_model):
    code, out, err = run_cli(capsys, "run", "capital of France?", "--tools", "none")
    assert code == 0, err
    assert "Paris" in out and scripted_model.requests[0].json_schema is None
    assert logged_requests(capsys) == ["capital of France?"]


def test_chat_tools_none_is_plain_chat_and_logged(capsys, scripted_model, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("capital of France?\n"))
    code, out, err = run_cli(capsys, "chat", "--tools", "none")
    assert code == 0, err
    assert "Paris" in out and "home" not in out
    assert [r.json_schema for r in scripted_model.requests] == [None]
    assert logged_requests(capsys) == ["capital of France?"]


def test_profile_json_is_a_dry_run_plan(capsys):
    code, out, _ = run_cli(capsys, "profile", "--json", "--profile", "generic-x86-64")
    assert code == 0
    data = json.loads(out)
    assert data["profile"] == "generic-x86-64"
    assert data["context_size"] >= 512 and data["threads"] >= 1
    assert data["why"]


def test_profile_human_output_lists_reasons(capsys):
    code, out, _ = run_cli(capsys, "profile", "--profile", "generic-x86-64")
    assert code == 0 and "why" in out and "model" in out


def test_unknown_profile_is_one_line_and_exit_2(capsys):
    code, out, err = run_cli(capsys, "profile", "--profile", "toaster")
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "generic-x86-64" in err  # says what exists


def test_model_that_does_not_fit_exit_3(capsys):
    code, _, err = run_cli(
        capsys,
        "profile",
        "--profile",
        "raspberry-pi-4",
        "--model",
        "phi3.5-mini-instruct-q4_k_m",
        "--context-size",
        "131072",
    )
    assert code == 3 and "does not fit" in err and err.count("\n") == 1


def test_models_list_json_marks_fit_and_local(capsys):
    code, out, _ = run_cli(capsys, "models", "list", "--json", "--profile", "generic-x86-64")
    rows = json.loads(out)
    assert code == 0 and len(rows) >= 10
    assert {"name", "fits", "available", "ram_mb", "license"} <= set(rows[0])


def test_pull_unknown_model(capsys):
    code, _, err = run_cli(capsys, "models", "pull", "gpt-17")
    assert code == 3 and "no model named" in err


def test_corrupt_model_file_is_one_readable_line(capsys, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOTAGGUF" * 10)
    code, _, err = run_cli(capsys, "run", "hi", "--model", str(bad), "--profile", "generic-x86-64")
    assert code == 3 and err.startswith("error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_console_script_never_prints_a_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "profile", "--profile", "nope"],
        check=False,
        capture_output=True,
        text=True,
        env=os.environ | {"PATH": ""},  # the isolated environment (conftest), no tools
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.integration
def test_run_answers_on_the_default_model(capsys):
    code, out, _ = run_cli(
        capsys,
        "run",
        "What is the capital of France?",
        "--json",
        "--tools",
        "none",
        "--profile",
        "generic-x86-64",
    )
    assert code == 0
    data = json.loads(out)
    assert "paris" in data["answer"].lower()
    assert data["model"] == "smollm2-135m-instruct-q4_1"
    assert data["latency_ms"] > 0


@pytest.mark.integration
def test_run_streams_plain_text(capsys):
    code, out, _ = run_cli(
        capsys,
        "run",
        "Say hello.",
        "--tools",
        "none",
        "--max-tokens",
        "8",
        "--profile",
        "generic-x86-64",
    )
    assert code == 0 and out.strip()
