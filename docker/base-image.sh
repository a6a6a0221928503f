#!/usr/bin/env bash
# An air-gapped stand-in for the Dockerfile's base image (PYTHON_IMAGE, python:3.11-slim-bookworm),
# built from Debian packages with mmdebstrap, for hosts that cannot pull from Docker Hub but can
# reach a Debian mirror (the machine's own apt sources are used, so a local mirror works too).
#
#   docker/base-image.sh TAG            build the stand-in and tag it TAG (needs root, mmdebstrap, docker)
#   docker/base-image.sh --if-needed TAG   only when TAG is neither in the engine nor pullable
#
# What the Dockerfile relies on is there: python3.11 with pip/venv at /usr/local/bin (a venv at
# /usr/local, as the official image puts python there), bash, groupadd/useradd, CA certificates.
# The machine's CA bundle replaces the image's, so pip inside a build trusts the same TLS
# interception the host does. The image carries the label aepipe.base=mmdebstrap to tell it apart.
set -euo pipefail

if_needed=0
if [[ "${1:-}" == "--if-needed" ]]; then
  if_needed=1
  shift
fi
tag=${1:?usage: $0 [--if-needed] TAG}
suite=${SUITE:-bookworm}

if ((if_needed)); then
  if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag: present in the engine" >&2
    exit 0
  fi
  if timeout 300 docker pull "$tag" >/dev/null 2>&1; then
    echo "base image $tag: pulled" >&2
    exit 0
  fi
  echo "base image $tag: not present and cannot be pulled; building the Debian stand-in" >&2
fi

for tool in mmdebstrap docker; do
  command -v "$tool" >/dev/null || {
    echo "$tool not found: install it (make docker-install: apt-get install docker.io mmdebstrap)" >&2
    exit 1
  }
done
sources=""
for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
  [[ -s "$f" ]] && sources+="$(cat "$f")"$'\n\n'
done
[[ -n "$sources" ]] || {
  echo "no apt sources found in /etc/apt; mmdebstrap needs a Debian mirror" >&2
  exit 1
}
ca=/etc/ssl/certs/ca-certificates.crt
[[ -s "$ca" ]] || {
  echo "$ca missing: install ca-certificates" >&2
  exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
# minbase: essential + apt; python3-venv brings ensurepip, so the venv at /usr/local has pip.
printf '%s' "$sources" | mmdebstrap --quiet --variant=minbase \
  --include=python3,python3-venv,ca-certificates \
  --customize-hook='chroot "$1" python3 -m venv /usr/local' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  "$suite" "$work/rootfs.tar" -
imported=$(docker import "$work/rootfs.tar")
cp "$ca" "$work/ca-certificates.crt"
cat >"$work/Dockerfile" <<EOF
FROM $imported
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
LABEL aepipe.base=mmdebstrap aepipe.base.suite=$suite
CMD ["python3"]
EOF
DOCKER_BUILDKIT=0 docker build --quiet -t "$tag" "$work" >/dev/null
docker rmi "$imported" >/dev/null 2>&1 || true
python=$(docker run --rm "$tag" python --version)
echo "base image $tag: built from Debian $suite in $(($(date +%s) - start)) s ($python)" >&2
