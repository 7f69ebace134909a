#!/bin/sh
# Make sure `python3 -m venv` works; on a fresh Debian it needs the python3-venv package.
set -e
python=${1:-python3}
if ! command -v "$python" >/dev/null 2>&1 || ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing python3 and python3-venv with apt-get" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv
    else
        echo "error: $python with the venv module is needed; fix: sudo apt-get install python3-venv" >&2
        exit 1
    fi
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "error: Python 3.11 or newer is needed ($python is $("$python" --version 2>&1))" >&2
    exit 1
}
