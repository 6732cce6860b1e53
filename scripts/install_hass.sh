#!/usr/bin/env bash
# Install the real Home Assistant core the integration tests run (tests/homeassistant/) into
# its own virtualenv, apart from .venv: HA pins its own aiohttp, pydantic, ... versions.
#
#   scripts/install_hass.sh
#
# HA runs there with --skip-pip (only PyPI is reachable, and tests must not install at
# start), so every requirement of the integrations the test config loads is installed here:
# read from each integration's manifest.json, dependencies included, at HA's own pins
# (homeassistant/package_constraints.txt). A marker file makes a second run take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

version="2024.1.6"
home="${XDG_CACHE_HOME:-$HOME/.cache}/edge-agent/hass-$version"
venv="$home/venv"
config="tests/homeassistant/config"
marker="$venv/.edge-agent-installed"
log="$home/install.log"

fail() { echo "install_hass: $1 (details: $log)" >&2; exit 1; }

# The marker holds the version and a hash of the test config's manifests and top-level keys,
# so a config that needs another integration re-runs the requirement step.
config_hash="$(cat scripts/hass_requirements.py "$config/configuration.yaml" \
    "$config"/custom_components/*/manifest.json \
    | sha256sum | cut -c1-16)"
if [[ -f "$marker" ]] && [[ "$(cat "$marker")" == "$version $config_hash" ]]; then
    echo "Home Assistant $version already installed in $venv"
    exit 0
fi

mkdir -p "$home"
: >"$log"
command -v python3.11 >/dev/null || fail "python3.11 not found (HA $version needs Python 3.11)"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating the Home Assistant virtualenv in $venv"
    python3.11 -m venv "$venv" >>"$log" 2>&1 || fail "could not create $venv"
fi

echo "installing homeassistant==$version (a few minutes the first time)"
"$venv/bin/python" -m pip install --upgrade pip >>"$log" 2>&1 || fail "could not upgrade pip"
"$venv/bin/pip" install "homeassistant==$version" >>"$log" 2>&1 \
    || fail "could not install homeassistant==$version"

echo "finding the requirements of the integrations in $config"
requirements="$("$venv/bin/python" scripts/hass_requirements.py "$config")" \
    || fail "could not read the integrations' manifests"
constraints="$("$venv/bin/python" -c \
    'import homeassistant, pathlib; print(pathlib.Path(homeassistant.__file__).parent / "package_constraints.txt")')"
echo "installing $(wc -w <<<"$requirements") integration requirements: $(tr '\n' ' ' <<<"$requirements")"
# shellcheck disable=SC2086  # one requirement per word
"$venv/bin/pip" install -c "$constraints" $requirements >>"$log" 2>&1 \
    || fail "could not install the integrations' requirements"

"$venv/bin/hass" --version >>"$log" 2>&1 || fail "hass does not start in $venv"
echo "$version $config_hash" >"$marker"
echo "Home Assistant $version installed in $venv"
