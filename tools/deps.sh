#!/usr/bin/env bash
# Installs, when missing, every Debian package and Go tool that qnbd's build and tests use.
set -euo pipefail

# Debian packages: the toolchain for cgo (the libnbd binding, -race), the oracles and
# clients the tests drive, and the peers the benchmark compares against.
pkgs=(
  gcc libc6-dev pkg-config make git nftables zlib1g-dev
  qemu-utils libnbd-dev libnbd-bin nbdkit fio prometheus python3-libnbd nbd-client openssl
  systemd python3-yaml file gnutls-bin python3-gi
)
staticcheck_version=v0.8.2

export PATH="/usr/local/go/bin:$PATH"
gobin="$(go env GOPATH)/bin"
export PATH="$gobin:$PATH"

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  sudo=()
  if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "deps: Debian packages present"
fi

if ! command -v staticcheck >/dev/null 2>&1; then
  echo "deps: go install honnef.co/go/tools/cmd/staticcheck@$staticcheck_version"
  go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version"
else
  echo "deps: staticcheck present ($(staticcheck -version 2>/dev/null || echo unknown version))"
fi
