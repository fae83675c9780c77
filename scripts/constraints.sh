#!/usr/bin/env bash
# Write constraints.txt: the exact versions of airbyte-fleet's runtime dependencies, the whole
# tree, as pip resolves them today in a clean virtual environment. The Dockerfile installs with
# `pip install -c constraints.txt`, so an image built tomorrow holds the same versions.
#
# Refresh it (then rebuild the image and run `make test`) when pyproject's dependencies change or
# to take newer releases:
#
#   make constraints          # or: bash scripts/constraints.sh [python3.12]
#
# Use the Python the image uses if it differs from yours: a dependency that only some Python
# versions need is only pinned when the venv's Python needs it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-${PYTHON:-python3}}

work=$(mktemp -d "${TMPDIR:-/tmp}/fleet-constraints.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
# From a copy of what the image gets, so that pip's build leaves nothing in the checkout.
mkdir "$work/src"
cp -R pyproject.toml README.md LICENSE src "$work/src/"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$work/src"
{
    echo "# The runtime dependencies of airbyte-fleet, pinned; made by scripts/constraints.sh"
    echo "# with $("$work/venv/bin/python" --version). Refresh: make constraints."
    "$work/venv/bin/python" -m pip freeze --all --exclude airbyte-fleet --exclude pip \
        --exclude setuptools --exclude wheel | LC_ALL=C sort -f
} >constraints.txt.new
mv constraints.txt.new constraints.txt
printf 'constraints.txt: %s pins\n' "$(grep -cv '^#' constraints.txt)" >&2
