#!/usr/bin/env bash
# Installs every build, test and run dependency of datera-agent from Debian 12 packages.
# Idempotent: packages already present are left alone. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config git clang-format
  # the static checks tools/test.sh runs (tools/lint.sh): clang-tidy on the product sources, shellcheck
  clang-tidy shellcheck
  # the compiler cache: the normal, sanitizer and fuzz builds reuse what an earlier run compiled
  ccache
  # clang 14 with libFuzzer and the sanitizer runtimes: tools/fuzz.sh (tests/fuzz)
  clang libclang-rt-14-dev
  # libraries (Boost 1.81 headers: Asio + Beast; conflicts with and replaces libboost1.74-dev)
  libboost1.81-dev libudev-dev libmount-dev libblkid-dev prometheus-cpp-dev
  libspdlog-dev libfmt-dev nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libsystemd-dev
  libssl-dev libgtest-dev libgmock-dev libbenchmark-dev
  # the CSI front end: gRPC and protobuf (plugins/csi/csi.proto compiled by protoc and
  # grpc_cpp_plugin at build time), and Debian's python3 gRPC for the test tier's CSI client
  # (tests/csi: stubs made by protoc with grpc_python_plugin, run with /usr/bin/python3)
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler python3-grpcio
  python3-protobuf
  # runtime tools the agent drives and the tests use
  open-iscsi udev xfsprogs e2fsprogs util-linux fdisk dmsetup curl iproute2 procps python3 openssl
  # the kernel e2e tier (tests/e2e): a QEMU guest and what its initramfs is built from
  qemu-system-x86 busybox-static cpio zstd kmod iputils-arping
  # promtool, which checks metrics/alerts.yaml (tests/metrics)
  prometheus
)

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup.sh: run as root (or install sudo)" >&2; exit 1; }
  SUDO="sudo"
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
    # Only promtool is wanted; the package's own server is not started on this machine.
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
else
  echo "setup.sh: all ${#PACKAGES[@]} packages present"
fi
