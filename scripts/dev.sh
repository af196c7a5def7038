#!/usr/bin/env bash
# One entry point for a fresh machine: set up the virtual environment, then serve or test.
#   scripts/dev.sh serve [nobackfill serve options]   # embedded default: SQLite + FAISS under ./data
#   scripts/dev.sh test  [pytest options]             # the whole suite (SQLite and PostgreSQL)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${NOBACKFILL_VENV:-.venv}"
PY="${PYTHON:-python3}"

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV"
    fi
    # Install only when the dependency list changed since the last successful install.
    local stamp="$VENV/.nobackfill-installed"
    local want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        # torch first and pinned: the CPU wheel on this disk; an unpinned torch pulls CUDA builds.
        "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
        "$VENV/bin/python" -m pip install --quiet -e ".[test]"
        echo "$want" > "$stamp"
    fi
}

browser() {
    # The dashboard tests drive Debian's Chromium (never a downloaded browser). Install it when
    # missing and this machine can (root + apt); otherwise those tests skip and say why.
    if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
            || echo "could not install chromium; dashboard browser tests will be skipped" >&2
    fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
    serve)
        setup
        exec "$VENV/bin/nobackfill" serve "$@"
        ;;
    test)
        setup
        browser
        set +e
        "$VENV/bin/python" -m pytest "$@"
        rc=$?
        set -e
        if [ "$rc" -eq 5 ]; then
            echo "pytest collected no tests: treating as a failure" >&2
            exit 1
        fi
        exit "$rc"
        ;;
    *)
        echo "usage: scripts/dev.sh serve|test [args]" >&2
        exit 2
        ;;
esac
