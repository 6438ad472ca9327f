# Shared by scripts/run and scripts/test: a virtualenv with the pinned packages, and Debian packages.
# shellcheck shell=bash

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# ensure_debs PACKAGE...: install the missing Debian packages (as root), or say exactly what to run.
ensure_debs() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "Installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts the services it installs where it can; the tests run their own copies.
    return 0
  fi
  say "Missing Debian packages: ${missing[*]}"
  echo "Install them with:  sudo apt-get install ${missing[*]}" >&2
  exit 1
}

# ensure_venv [EXTRA]: .venv with this project installed (editable), reinstalled when pyproject.toml changes.
ensure_venv() {
  local extra="${1:-}" spec="." stamp
  [ -n "$extra" ] && spec=".[$extra]"
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    say "Spacemail needs Python 3.11 or newer; python3 is $(python3 --version 2>&1)"
    exit 1
  fi
  if [ ! -x .venv/bin/python ]; then
    say "Creating the virtualenv in .venv"
    python3 -m venv .venv || { echo "Install python3-venv (Debian: sudo apt-get install python3-venv)" >&2; exit 1; }
  fi
  stamp="$(sha256sum pyproject.toml | cut -c1-16)-$extra"
  if [ "$(cat .venv/.spacemail-installed 2>/dev/null)" != "$stamp" ]; then
    say "Installing Python packages (pinned in pyproject.toml)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e "$spec"
    echo "$stamp" > .venv/.spacemail-installed
  fi
}

# redis_answers URL: true when a Redis server answers PING there.
redis_answers() {
  .venv/bin/python - "$1" <<'PY'
import sys
from redis import Redis
try:
    sys.exit(0 if Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping() else 1)
except Exception:
    sys.exit(1)
PY
}

# postgres_answers URL: true when PostgreSQL accepts a connection there.
postgres_answers() {
  .venv/bin/python - "$1" <<'PY'
import sys
from sqlalchemy import create_engine
engine = create_engine(sys.argv[1], connect_args={"connect_timeout": 3})
try:
    with engine.connect():
        pass
except Exception:
    sys.exit(1)
finally:
    engine.dispose()
PY
}
