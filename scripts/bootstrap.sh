#!/usr/bin/env bash
# Make this checkout ready to run: a .venv with NeuralOps and its dev tools, and the
# system tools the stack and tests use (Prometheus, promtool; buf with --tools).
# Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
want_tools=0
for arg in "$@"; do
  case "$arg" in
    --tools) want_tools=1 ;;
    *) echo "usage: $0 [--tools]" >&2; exit 2 ;;
  esac
done

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.neuralops-installed-$( (cat pyproject.toml; .venv/bin/python --version) | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing neuralops and its dev tools into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[server,dev]"
  rm -f .venv/.neuralops-installed-*
  touch "$stamp"
fi

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing Prometheus (Debian package prometheus)"
    # The package starts nothing here (no systemd); our stack runs its own Prometheus.
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; then
      echo "bootstrap: WARNING: apt-get could not install prometheus; see the messages above." >&2
    fi
  else
    # Not fatal: `neuralops up` runs without it (and says so), the Prometheus tests fail
    # with this same advice.
    echo "bootstrap: WARNING: Prometheus is not installed and I cannot install it (need root and apt-get)." >&2
    echo "bootstrap: install the Debian package 'prometheus' (it brings promtool), or set PROM_URL." >&2
  fi
fi

# The console's browser test drives a headless Chromium through its driver (Debian).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing Chromium and its driver (Debian packages chromium, chromium-driver)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }; then
      echo "bootstrap: WARNING: apt-get could not install chromium; the console test will say so." >&2
    fi
  else
    echo "bootstrap: WARNING: chromium/chromedriver missing (Debian packages chromium, chromium-driver): the console test needs them." >&2
  fi
fi

if [ "$want_tools" = 1 ] && [ ! -x node_modules/.bin/buf ]; then
  echo "bootstrap: installing buf (npm, pinned in package-lock.json)"
  npm ci --no-fund --no-audit --loglevel=error
fi
echo "bootstrap: ready"
