#!/usr/bin/env bash
# Make the container tests' base image, localhost/fleet-base:bookworm, from Debian's own archive.
#
# No Docker engine runs on the project's machines and no registry image can be pulled, so the
# tests build the Dockerfile with podman on a base made here: a minimal Debian bookworm with
# python3 (3.11), venv, pip and CA certificates, bootstrapped from the Debian mirror that apt on
# this machine already uses, then imported into podman.
#
# Idempotent and cached: installs podman, debootstrap and runc only when missing (needs root and
# apt), and does nothing more when the image already exists. About 1.5 minutes the first time.
#
#   bash scripts/container-base.sh            # make it unless present
#   FLEET_BASE_REBUILD=1 bash scripts/container-base.sh   # make it again
#   FLEET_DEBIAN_MIRROR=URL bash scripts/container-base.sh # a mirror other than apt's
set -euo pipefail

IMAGE=${FLEET_BASE_IMAGE:-localhost/fleet-base:bookworm}
SUITE=bookworm
PACKAGES=python3,python3-venv,python3-pip,ca-certificates

say() { printf 'container-base: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# ---------------------------------------------------------------------------- tools
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
[ -x /usr/bin/runc ] || missing+=(runc)
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${missing[*]} and no apt-get here; install them with your package manager."
    [ "$(id -u)" -eq 0 ] ||
        die "missing ${missing[*]}; install them as root: apt-get install -y ${missing[*]}"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q "${missing[@]}" >/dev/null
fi
PATH=$PATH:/usr/sbin:/sbin

# ---------------------------------------------------------------------------- cache
if [ -z "${FLEET_BASE_REBUILD:-}" ] && podman image exists "$IMAGE"; then
    say "$IMAGE is present; nothing to do"
    exit 0
fi

# ---------------------------------------------------------------------------- mirror
# The Debian archive apt already uses, read from apt's own configuration (one-line or deb822
# sources alike); never a name written into this file.
mirror=${FLEET_DEBIAN_MIRROR:-}
if [ -z "$mirror" ] && command -v apt-get >/dev/null 2>&1; then
    mirror=$(apt-get indextargets --format '$(REPO_URI)' \
        'Identifier: Packages' 'Origin: Debian' 'Label: Debian' 2>/dev/null | head -n 1 || true)
    if [ -z "$mirror" ]; then
        # No lists downloaded yet: indextargets knows only what an update fetched.
        if [ "$(id -u)" -eq 0 ]; then
            apt-get update -q >/dev/null
            mirror=$(apt-get indextargets --format '$(REPO_URI)' \
                'Identifier: Packages' 'Origin: Debian' 'Label: Debian' 2>/dev/null | head -n 1 || true)
        fi
    fi
fi
[ -n "$mirror" ] ||
    die "cannot tell which Debian mirror apt uses; set FLEET_DEBIAN_MIRROR to the archive's URL."

# ---------------------------------------------------------------------------- build
[ "$(id -u)" -eq 0 ] || die "debootstrap needs root; run this script as root."
work=$(mktemp -d "${TMPDIR:-/tmp}/fleet-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
started=$SECONDS
say "debootstrap $SUITE ($PACKAGES) into $rootfs"
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
    die "debootstrap failed"
fi
# Smaller image, faster import: no downloaded .debs, no package lists.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
chroot "$rootfs" python3 --version >/dev/null 2>&1 ||
    die "the new root file system has no working python3"

say "importing as $IMAGE"
tar --numeric-owner -C "$rootfs" -c . |
    podman import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE" >/dev/null
podman image exists "$IMAGE" || die "podman import did not produce $IMAGE"
say "made $IMAGE in $((SECONDS - started)) s ($(chroot "$rootfs" python3 --version))"
