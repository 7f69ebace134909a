#!/usr/bin/env bash
# Build a Debian bookworm image with Python 3.11 from Debian packages alone (debootstrap, then
# `docker import`), for building the Dockerfile where no image registry can be reached
# (`make image` runs it, see scripts/build-image.sh):
#
#   scripts/build-base-image.sh [TAG]          # TAG defaults to wa-exporter-base:bookworm
#   docker build --build-arg BASE_IMAGE=wa-exporter-base:bookworm ...
#
# The image is labelled with a hash of this script and reused while the script is unchanged.
# Needs root, debootstrap and a Docker engine. Packages come from the Debian mirror apt uses
# here (/etc/apt/sources.list*), or from DEBIAN_MIRROR. Exit code 3: a prerequisite is missing.
set -euo pipefail

tag=${1:-wa-exporter-base:bookworm}
suite=bookworm
recipe_label=wa-exporter.base-recipe
recipe=$(sha256sum "$0" | cut -d' ' -f1)

missing() { echo "build-base-image: $1" >&2; exit 3; }
command -v docker >/dev/null || missing "docker not found; fix: apt-get install docker.io"

previous=$(docker image inspect --format '{{ .Id }}' "$tag" 2>/dev/null || true)
current=$(docker image inspect --format "{{ index .Config.Labels \"$recipe_label\" }}" "$tag" \
    2>/dev/null || true)
if [ "$current" = "$recipe" ]; then
    echo "$tag is up to date"
    exit 0
fi

[ "$(id -u)" = 0 ] || missing "debootstrap needs root"
command -v debootstrap >/dev/null || missing "debootstrap not found; fix: apt-get install debootstrap"

# The first "deb" source for $suite: deb822 stanzas in *.sources, one-line entries in *.list.
apt_mirror() {
    local files=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    awk -v suite="$suite" '
        function flush() {
            if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ")) print uri
            types = suites = uri = ""
        }
        FNR == 1 { flush() }
        FILENAME ~ /\.sources$/ {
            if ($0 ~ /^[[:space:]]*$/) { flush(); next }
            if ($1 == "Types:") { $1 = ""; types = $0 }
            if ($1 == "Suites:") { $1 = ""; suites = $0 }
            if ($1 == "URIs:") uri = $2
            next
        }
        $1 == "deb" {
            line = $0
            sub(/\[[^]]*\][[:space:]]*/, "", line)  # [signed-by=... arch=...]
            split(line, field)
            if (field[3] == suite) print field[2]
        }
        END { flush() }
    ' "${files[@]}" | sed -n 1p
}

mirror=${DEBIAN_MIRROR:-$(apt_mirror)}
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/wa-exporter-base.XXXXXX)
log=$(mktemp)
trap 'rm -rf --one-file-system "$root" "$log"' EXIT

echo "build-base-image: debootstrap $suite from $mirror into $root"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$root" "$mirror" >"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }

python_version=$(chroot "$root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# What python:*-slim leaves out too: package lists, caches, documentation, logs.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old "$root"/var/log/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*

tar --numeric-owner -C "$root" -c . | docker import \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change "LABEL $recipe_label=$recipe" \
    --change "LABEL wa-exporter.python-version=$python_version" \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
# The outdated base goes, unless images built on it still need it.
[ -z "$previous" ] || docker image rm "$previous" >/dev/null 2>&1 || true
echo "build-base-image: $tag built (python $python_version)"
