#!/bin/sh
# Start what the test suite talks to, where it is installed but not running. Best effort:
# the tests themselves report (or, in CI, fail on) anything still missing.
if command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        # A dockerd that was killed leaves its pid file behind, which blocks the next start.
        pgrep -x dockerd >/dev/null 2>&1 || rm -f /var/run/docker.pid
        pgrep -x dockerd >/dev/null 2>&1 || (dockerd >/var/log/dockerd.log 2>&1 &)
        i=0
        while ! docker info >/dev/null 2>&1 && [ $i -lt 60 ]; do i=$((i + 1)); sleep 0.5; done
        docker info >/dev/null 2>&1 && echo "started dockerd" >&2 || echo "dockerd did not start; see /var/log/dockerd.log" >&2
    else
        echo "the Docker engine is not running (start dockerd as root); Docker tests will skip" >&2
    fi
fi
exit 0
