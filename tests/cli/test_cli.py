import json
import os
import subprocess
import sys

import pytest

from edge_agent.cli import main


def run_cli(capsys, *args):
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


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
