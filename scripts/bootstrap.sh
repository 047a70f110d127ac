#!/usr/bin/env bash
# Set up this project on a Debian machine with Python >= 3.11: a .venv at the repository
# root with the package installed in editable mode.
#
#   bash scripts/bootstrap.sh           runtime dependencies
#   bash scripts/bootstrap.sh --test    + test dependencies, and the system packages the tests
#                                       need (PostgreSQL + PostGIS, for the pgstac STAC API),
#                                       installed with apt-get when running as root (or with
#                                       passwordless sudo) and missing
#
# Idempotent and quiet: output is shown only when a step fails.  When nothing changed since
# the last run (same pyproject.toml, same mode) it returns in about a second.
# Environment: PYTHON=/path/to/python3.11+ picks the interpreter used to create .venv;
# TORCH_SPEC picks the PyTorch build (default torch==2.13.0).
set -euo pipefail

usage() { sed -n '2,13s/^# \{0,1\}//p' "$0"; }

WITH_TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bootstrap: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="$PWD/.venv"
STAMP="$VENV/.bootstrap-stamp"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

say() { echo "bootstrap: $*" >&2; }

# Run a command with its output captured; print the output only if it fails.
quiet() {
  if ! "$@" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    say "failed: $*"
    exit 1
  fi
}

# Run a command as root: directly, or through passwordless sudo; fail if neither is possible.
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo "$@"
  else
    return 1
  fi
}

can_be_root() { [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; }

APT_UPDATED=0
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1 || ! can_be_root; then
    say "missing system packages: $*"
    say "install them as root: apt-get update && apt-get install -y $*"
    return 1
  fi
  say "installing system packages: $*"
  if [ "$APT_UPDATED" = 0 ]; then
    quiet as_root apt-get update -q
    APT_UPDATED=1
  fi
  quiet as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "$@"
}

# ------------------------------------------------------------------ system packages (tests)

pg_major() {
  # Newest PostgreSQL server installed from Debian's packages (empty if none).
  local d best=""
  for d in /usr/lib/postgresql/*/bin/initdb; do
    [ -x "$d" ] || continue
    d="${d#/usr/lib/postgresql/}"
    d="${d%%/*}"
    if [ -z "$best" ] || [ "$d" -gt "$best" ]; then best="$d"; fi
  done
  echo "$best"
}

ensure_test_system_packages() {
  local major
  major="$(pg_major)"
  if [ -z "$major" ]; then
    apt_install postgresql || return 1
    major="$(pg_major)"
    [ -n "$major" ] || { say "postgresql installed, but no initdb under /usr/lib/postgresql"; return 1; }
  fi
  if [ ! -f "/usr/share/postgresql/$major/extension/postgis.control" ]; then
    apt_install "postgresql-$major-postgis-3" || return 1
  fi
  if ! id postgres >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "no 'postgres' system user (PostgreSQL refuses to run as root); reinstall postgresql-common"
    return 1
  fi
}

if [ "$WITH_TEST" = 1 ]; then
  # Not fatal here: without them only the pgstac tests fail, each saying what is missing.
  ensure_test_system_packages || say "continuing without them: the pgstac tests will fail"
fi

# ------------------------------------------------------------------ virtualenv

python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }

find_python() {
  local c
  for c in ${PYTHON:-} python3 python3.11 python3.12 python3.13 python; do
    if command -v "$c" >/dev/null 2>&1 && python_ok "$c"; then
      command -v "$c"
      return 0
    fi
  done
  say "no Python >= 3.11 found (set PYTHON=/path/to/python3.11)"
  return 1
}

if [ -d "$VENV" ] && ! python_ok "$VENV/bin/python"; then
  say "$VENV is broken or too old; recreating it"
  rm -rf "$VENV"
fi

if [ ! -x "$VENV/bin/python" ]; then
  PY="$(find_python)"
  if ! "$PY" -m venv "$VENV" >"$LOG" 2>&1; then
    rm -rf "$VENV"
    # Debian's python3 ships venv/ensurepip separately.
    ver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    if grep -q -i ensurepip "$LOG" && apt_install "python$ver-venv"; then
      quiet "$PY" -m venv "$VENV"
    else
      cat "$LOG" >&2
      say "could not create $VENV with $PY"
      exit 1
    fi
  fi
fi

# ------------------------------------------------------------------ the package itself

if [ "$WITH_TEST" = 1 ]; then MODE=test; TARGET='.[test]'; else MODE=runtime; TARGET='.'; fi
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"

stamp_ok() {
  [ -f "$STAMP" ] || return 1
  local mode hash
  read -r mode hash <"$STAMP" || return 1
  [ "$hash" = "$WANT" ] || return 1
  [ "$MODE" = runtime ] || [ "$mode" = test ] || return 1
  "$VENV/bin/python" -c 'import importlib.util as u, sys
sys.exit(u.find_spec("pipeline") is None or u.find_spec("flows") is None)' >/dev/null 2>&1
}

# PyTorch first and pinned: left to the resolver, an unpinned torch may pull GBs of CUDA
# wheels. TORCH_SPEC overrides it (e.g. a CUDA build on a GPU machine).
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
  say "installing $TORCH_SPEC into .venv"
  quiet "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q "$TORCH_SPEC"
fi

if ! stamp_ok; then
  say "installing $TARGET into .venv (a few minutes on a new machine)"
  quiet "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -e "$TARGET"
  echo "$MODE $WANT" >"$STAMP"
fi
