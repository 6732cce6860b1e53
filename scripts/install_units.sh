#!/usr/bin/env bash
# Install edge-agent's systemd user units: `serve` kept running, and a timer that syncs and
# pulls adapters every 15 minutes, both running the program scripts/install.sh put in ./.venv.
#
#   scripts/install_units.sh              write the units (run scripts/install.sh first)
#   scripts/install_units.sh uninstall    stop, disable and remove them (settings and data stay)
#
# User units, not system ones: edge-agent's config, data, log key and keyring entries belong to
# the user who installed it (platformdirs, the OS keyring), and the program lives in that
# user's checkout; a system unit would need a second account owning copies of all of them.
# Run `loginctl enable-linger $USER` once so they run without anyone logged in.
#
# EDGE_AGENT_UNIT_DIR    where the units go (default ~/.config/systemd/user)
# EDGE_AGENT_UNIT_SANDBOX  auto (default) | yes | no: the mount sandbox (ProtectSystem=strict,
#                        PrivateTmp, ...) needs unprivileged user namespaces in a user unit;
#                        auto turns it on when this kernel allows them
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
templates="$repo/contrib/systemd"
units=(edge-agent.service edge-agent-sync.service edge-agent-sync.timer)
default_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
unit_dir="${EDGE_AGENT_UNIT_DIR:-$default_dir}"

die() { echo "error: $*" >&2; exit 2; }

# The user manager is only told when the units went where it looks and it is running.
have_manager() {
    [[ "$unit_dir" == "$default_dir" ]] && systemctl --user show-environment >/dev/null 2>&1
}

# Every path lands unquoted in a unit line and in sed: refuse what either would misread.
check_path() {
    [[ "$1" =~ ^[[:alnum:]._/+:=-]+$ ]] || die "unsupported characters in path '$1'"
}

# config, data and cache dirs as the program itself resolves them (EDGE_AGENT_HOME, XDG,
# config.toml)
settings_dirs() {
    "$repo/.venv/bin/python" - <<'PY'
import sys
from edge_agent.errors import EdgeAgentError
from edge_agent.settings import load_settings
try:
    s = load_settings()
except EdgeAgentError as exc:
    sys.exit(f"error: {exc}")
print(s.config_dir, s.data_dir, s.cache_dir, sep="\n")
PY
}

# The variables that chose those dirs here, so the units' program finds the same ones.
unit_environment() {
    local name assignments=""
    for name in EDGE_AGENT_HOME XDG_CONFIG_HOME XDG_DATA_HOME XDG_CACHE_HOME; do
        [[ -n "${!name:-}" ]] || continue
        check_path "${!name}"
        assignments="$assignments $name=${!name}"
    done
    if [[ -n "$assignments" ]]; then echo "Environment=${assignments# }"; else
        echo "# the default XDG dirs apply"; fi
}

sandbox_prefix() {
    local mode="${EDGE_AGENT_UNIT_SANDBOX:-auto}"
    case "$mode" in
        yes) echo "" ;;
        no) echo "#" ;;
        auto) if unshare --user --map-root-user --mount true 2>/dev/null; then echo ""; else
                echo "sandbox off: this kernel refuses unprivileged user namespaces" >&2
                echo "#"; fi ;;
        *) die "EDGE_AGENT_UNIT_SANDBOX must be auto, yes or no, not '$mode'" ;;
    esac
}

install_units() {
    local program="$repo/.venv/bin/edge-agent" dirs env_file environment rw sandbox unit
    [[ -x "$program" ]] || die "$program is missing: run scripts/install.sh first"
    mapfile -t dirs < <(settings_dirs)
    [[ ${#dirs[@]} -eq 3 ]] || die "could not read edge-agent's settings"
    for path in "$repo" "${dirs[@]}"; do check_path "$path"; done
    (umask 077 && mkdir -p "${dirs[@]}")  # before ReadWritePaths= names them
    mkdir -p "$unit_dir"
    env_file="${dirs[0]}/env"
    [[ -e "$env_file" ]] || (umask 077 && cp "$templates/edge-agent.env" "$env_file")
    chmod 600 "$env_file"  # it holds secrets
    environment="$(unit_environment)"
    rw="-${dirs[0]} -${dirs[1]} -${dirs[2]}"
    sandbox="$(sandbox_prefix)"
    for unit in "${units[@]}"; do
        sed -e "s|@EDGE_AGENT@|$program|g" -e "s|@ENV_FILE@|$env_file|g" -e "s|@REPO@|$repo|g" \
            -e "s|@ENVIRONMENT@|$environment|" -e "s|@RW_PATHS@|$rw|" -e "s|^@SANDBOX@|$sandbox|" \
            "$templates/$unit" >"$unit_dir/$unit"
    done
    echo "wrote ${units[*]} to $unit_dir; settings and secrets: $env_file"
    if have_manager; then
        systemctl --user daemon-reload
        echo "start them: systemctl --user enable --now edge-agent.service edge-agent-sync.timer"
    else
        echo "no systemd user manager here: run 'systemctl --user daemon-reload' in a login session"
    fi
}

uninstall_units() {
    local unit
    if have_manager; then
        systemctl --user disable --now edge-agent-sync.timer edge-agent.service 2>/dev/null || true
    fi
    for unit in "${units[@]}"; do rm -f "$unit_dir/$unit"; done
    if have_manager; then systemctl --user daemon-reload; fi
    echo "removed ${units[*]} from $unit_dir (settings, secrets and data stay)"
}

case "${1:-install}" in
    install) install_units ;;
    uninstall) uninstall_units ;;
    *) die "usage: scripts/install_units.sh [install|uninstall]" ;;
esac
