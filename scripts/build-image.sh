#!/usr/bin/env bash
# Build the exporter's image where no image registry can be reached (what `make image` runs):
#
#   1. the base: Debian bookworm with Debian's Python, made by scripts/build-base-image.sh
#      (debootstrap from the Debian archive, then `docker import`); reused while that script
#      is unchanged, so only the first build takes minutes;
#   2. the wheels: every wheel the install needs (dependencies, EXTRAS, the setuptools the
#      build requires), downloaded from the package index into wheels/ for the base's Python;
#   3. `docker build` of the Dockerfile on that base, with --build-arg WHEELS=wheels, so the
#      build itself reaches no network; tagged IMAGE:<version> and IMAGE:latest;
#   4. `IMAGE:<version> --version`, run once, to show the image works.
#
# Environment: IMAGE (default wa-exporter), BASE_IMAGE (default wa-exporter-base:bookworm),
# EXTRAS (e.g. rsa or ssh,rsa), PYTHON (a Python >= 3.11 with pip, to read pyproject.toml and
# download the wheels; default python3), DOCKER_BUILD_FLAGS (more `docker build` flags, e.g.
# --label or --build-arg DOCKER_GID=...). Building the base needs root, debootstrap and
# debian-archive-keyring the first time; exit code 3 when a prerequisite is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${IMAGE:-wa-exporter}
base=${BASE_IMAGE:-wa-exporter-base:bookworm}
extras=${EXTRAS:-}
python=${PYTHON:-python3}
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' exporter/__init__.py)
glibc_minor=36  # bookworm's glibc 2.36: the base runs manylinux wheels up to manylinux_2_36

"$python" -m pip --version >/dev/null 2>&1 \
    || { echo "build-image: $python has no pip; fix: PYTHON=.venv/bin/python (make venv)" >&2; exit 3; }

scripts/build-base-image.sh "$base"
python_version=$(docker image inspect \
    --format '{{ index .Config.Labels "wa-exporter.python-version" }}' "$base")
[ -n "$python_version" ] || { echo "build-image: $base has no python-version label" >&2; exit 1; }

# The requirements of the package, of the chosen extras and of its build, from pyproject.toml.
mapfile -t requirements < <("$python" - "$extras" <<'EOF'
import sys
import tomllib

with open("pyproject.toml", "rb") as fh:
    pyproject = tomllib.load(fh)
wanted = [name.strip() for name in sys.argv[1].split(",") if name.strip()]
optional = pyproject["project"].get("optional-dependencies", {})
unknown = [name for name in wanted if name not in optional]
if unknown:
    sys.exit(f"build-image: unknown extra {', '.join(unknown)}; fix: use one of "
             f"{', '.join(sorted(optional))}")
print("\n".join([*pyproject["project"]["dependencies"],
                 *(req for name in wanted for req in optional[name]),
                 *pyproject["build-system"]["requires"]]))
EOF
)

arch=$(uname -m)
platforms=()
for ((minor = glibc_minor; minor >= 5; minor--)); do
    platforms+=(--platform "manylinux_2_${minor}_${arch}")
done
for alias in 2014 2010 1; do platforms+=(--platform "manylinux${alias}_${arch}"); done

echo "build-image: wheels for Python $python_version into wheels/"
rm -rf wheels
"$python" -m pip download --quiet --disable-pip-version-check --dest wheels \
    --only-binary=:all: --python-version "$python_version" --implementation cp \
    --abi "cp${python_version/./}" --abi abi3 --abi none "${platforms[@]}" \
    "${requirements[@]}"

echo "build-image: docker build $image:$version on $base"
# shellcheck disable=SC2086  # DOCKER_BUILD_FLAGS is a list of flags
docker build --pull=false --force-rm \
    --build-arg BASE_IMAGE="$base" --build-arg WHEELS=wheels \
    --build-arg VERSION="$version" --build-arg EXTRAS="$extras" \
    ${DOCKER_BUILD_FLAGS:-} -t "$image:$version" -t "$image:latest" .
docker run --rm "$image:$version" --version
echo "build-image: built $image:$version and $image:latest"
