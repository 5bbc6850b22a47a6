#!/usr/bin/env bash
# Installs what mlxq needs and is missing, on Debian/Ubuntu or macOS:
# a Python 3.11+ virtual environment in .venv with the locked dependencies, and redis-server.
# With --with-browser (make test), also Chromium for the web page's test (tests/web).
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

with_browser=false
for arg in "$@"; do
    case "$arg" in
    --with-browser) with_browser=true ;;
    *)
        echo "usage: scripts/setup.sh [--with-browser]" >&2
        exit 2
        ;;
    esac
done

find_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "mlxq needs Python 3.11 or newer (install it, e.g. 'brew install python@3.12')." >&2
    exit 1
}

install_python_deps() {
    local stamp=.venv/.mlxq-installed want
    want=$(cat requirements.lock pyproject.toml | sha256sum 2>/dev/null || cat requirements.lock pyproject.toml | shasum -a 256)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "==> creating .venv"
        "$(find_python)" -m venv .venv
    fi
    echo "==> installing Python dependencies (requirements.lock)"
    # uv installs the locked set in a third of pip's time (it compiles bytecode on every
    # core; pip on one); pip does it where uv cannot be had.
    if .venv/bin/python -m pip install --quiet uv; then
        local uv=(.venv/bin/python -m uv pip install --quiet --python .venv/bin/python)
        "${uv[@]}" --compile-bytecode -r requirements.lock
        "${uv[@]}" --no-deps -e .
    else
        .venv/bin/python -m pip install --quiet --upgrade pip
        .venv/bin/python -m pip install --quiet -r requirements.lock
        .venv/bin/python -m pip install --quiet --no-deps -e .
    fi
    echo "$want" >"$stamp"
}

install_redis() {
    if command -v redis-server >/dev/null 2>&1; then
        return
    fi
    echo "==> installing redis-server"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if command -v apt-get >/dev/null 2>&1; then
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
    elif command -v brew >/dev/null 2>&1; then
        brew install redis
    else
        echo "Please install Redis (redis-server) and run this again." >&2
        exit 1
    fi
}

install_openblas() {
    # MLX's Linux CPU wheel links a slow reference BLAS; workers load OpenBLAS instead when
    # it is installed (worker/cpu_backend.py). macOS uses Accelerate/Metal and needs nothing.
    [ "$(uname -s)" = "Linux" ] || return 0
    ldconfig -p 2>/dev/null | grep -q "libopenblas.so.0" && return 0
    command -v apt-get >/dev/null 2>&1 || return 0
    echo "==> installing OpenBLAS (fast CPU matmuls for MLX)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libopenblas0-pthread >/dev/null
}

install_browser() {
    # Debian's Chromium, driven headless by Playwright in tests/web (`playwright install`
    # downloads are not needed). Elsewhere (macOS) nothing is installed and the test skips.
    [ -x /usr/bin/chromium ] && return 0
    command -v apt-get >/dev/null 2>&1 || return 0
    echo "==> installing Chromium (tests/web)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
}

install_python_deps
install_redis
install_openblas
if [ "$with_browser" = true ]; then
    install_browser
fi
