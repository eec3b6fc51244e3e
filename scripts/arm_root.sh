#!/usr/bin/env bash
# Build, once per machine, a small aarch64 root whose Python runs airflow-neo's ARM64 artifacts
# under QEMU user-mode emulation, and print its path as the last line of stdout.
#
#   root="$(bash scripts/arm_root.sh)"
#   qemu-aarch64 -L "$root" "$root/usr/bin/python3.11" -c 'import tvm, onnxruntime'
#
# What it holds: Debian arm64 packages for python3.11 and the libraries it and the wheels need
# (downloaded with a private apt configuration whose architecture is arm64, then unpacked with
# dpkg-deb -x: no binfmt_misc, no chroot, no foreign architecture added to this machine's dpkg),
# plus the manylinux aarch64 wheels of apache-tvm, apache-tvm-ffi, numpy, ml_dtypes,
# typing_extensions and onnxruntime unpacked into usr/lib/python3/dist-packages, their .pyc files
# compiled ahead (the emulated Python would take minutes to compile them on every run), an empty
# etc/ld.so.cache (so the guest loader never reads this machine's x86-64 cache) and a
# proc/cpuinfo describing an Arm Neoverse N1 (qemu-user 7.2 passes the host's x86 /proc/cpuinfo
# through, and onnxruntime's cpuinfo library crashes on it; "qemu-aarch64 -L" serves the root's
# copy instead). Run it with "-cpu neoverse-n1" so the emulated CPU matches that file.
#
# Cache: ${AIRFLOW_NEO_CACHE:-/var/cache/airflow-neo}/arm64-root (non-root default:
# ${XDG_CACHE_HOME:-$HOME/.cache}/airflow-neo). It is rebuilt when missing or when its stamp
# (the wanted versions below) differs; concurrent runs wait on a lock; a rebuild is made beside
# the old root and swapped in whole. Installs qemu-user with apt when root and qemu-aarch64 is
# missing. Logs go to stderr. Versions can be overridden with ARM_ROOT_* variables.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

FORMAT=1  # bump when the layout of the root changes
PY_VERSION="${ARM_ROOT_PYTHON:-3.11}"
DEBIAN_PACKAGES="python${PY_VERSION} libstdc++6"
WHEELS=(
  "apache-tvm==${ARM_ROOT_TVM:-0.27.0.post1}"
  "apache-tvm-ffi==${ARM_ROOT_TVM_FFI:-0.1.14.post1}"
  "numpy==${ARM_ROOT_NUMPY:-2.4.6}"
  "ml_dtypes==${ARM_ROOT_ML_DTYPES:-0.7.0}"
  "typing_extensions==${ARM_ROOT_TYPING_EXTENSIONS:-4.16.0}"
  "onnxruntime==${ARM_ROOT_ONNXRUNTIME:-1.32.0}"
)
# Debian 12's glibc is 2.36: every manylinux tag up to 2.36 runs (pip download needs each tag named).
GLIBC_MINOR="${ARM_ROOT_GLIBC_MINOR:-36}"
PLATFORM_ARGS=(--platform manylinux2014_aarch64)
for ((v = 17; v <= GLIBC_MINOR; v++)); do PLATFORM_ARGS+=(--platform "manylinux_2_${v}_aarch64"); done

log() { echo "arm_root: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ -n "${AIRFLOW_NEO_CACHE:-}" ]; then
  CACHE="$AIRFLOW_NEO_CACHE"
elif [ "$(id -u)" = 0 ] || [ -w /var/cache/airflow-neo ]; then
  CACHE=/var/cache/airflow-neo
else
  CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/airflow-neo"
fi
ROOT="$CACHE/arm64-root"
STAMP_NAME=.airflow-neo-arm64-root
mkdir -p "$CACHE" || die "cannot create the cache directory $CACHE (set AIRFLOW_NEO_CACHE to a writable one)"

# -- qemu-user ---------------------------------------------------------------------------------
find_qemu() { command -v qemu-aarch64 || command -v qemu-aarch64-static || true; }
QEMU="$(find_qemu)"
if [ -z "$QEMU" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing qemu-user (apt)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user >&2
    QEMU="$(find_qemu)"
  fi
  [ -n "$QEMU" ] || die "qemu-aarch64 is not installed; install the Debian package qemu-user (apt-get install qemu-user)"
fi

# -- the stamp: everything that decides the root's contents -------------------------------------
host_suite="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-unknown}")"
ncpu="$(getconf _NPROCESSORS_CONF 2>/dev/null || nproc)"
STAMP="format=$FORMAT
debian=$host_suite
packages=$DEBIAN_PACKAGES
wheels=${WHEELS[*]}
glibc=2.$GLIBC_MINOR
cpuinfo=neoverse-n1 x$ncpu"

exec 9>"$CACHE/arm64-root.lock"
flock 9
if [ -x "$ROOT/usr/bin/python$PY_VERSION" ] && [ "$(cat "$ROOT/$STAMP_NAME" 2>/dev/null)" = "$STAMP" ]; then
  log "cached: $ROOT"
  echo "$ROOT"
  exit 0
fi

started=$SECONDS
BUILD="$CACHE/arm64-root.build.$$"
APT_DIR="$CACHE/arm64-apt.$$"
cleanup() { rm -rf "$BUILD" "$APT_DIR"; }
trap cleanup EXIT
rm -rf "$BUILD" "$APT_DIR"
mkdir -p "$BUILD" "$APT_DIR/lists/partial" "$APT_DIR/archives/partial" "$APT_DIR/dpkg"
: >"$APT_DIR/dpkg/status"

# -- Debian arm64 packages: a private apt (this machine's sources, architecture arm64, an empty
#    dpkg status so that every dependency is downloaded) -----------------------------------------
log "downloading Debian arm64 packages: $DEBIAN_PACKAGES and their dependencies"
APT=(apt-get -q
  -o "Dir::State=$APT_DIR" -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::State::status=$APT_DIR/dpkg/status"
  -o "Dir::Cache=$APT_DIR" -o "Dir::Cache::Archives=$APT_DIR/archives"
  -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
  -o APT::Architecture=arm64 -o APT::Architectures=arm64 -o APT::Sandbox::User=root
  -o Acquire::Languages=none -o APT::Install-Recommends=false)
if [ -n "${ARM_ROOT_DEBIAN_MIRROR:-}" ]; then
  # Another mirror (e.g. for a host whose own sources do not carry arm64).
  echo "deb ${ARM_ROOT_DEBIAN_MIRROR} ${ARM_ROOT_DEBIAN_SUITE:-bookworm} main" >"$APT_DIR/sources.list"
  APT+=(-o "Dir::Etc::SourceList=$APT_DIR/sources.list" -o "Dir::Etc::SourceParts=$APT_DIR/none")
fi
"${APT[@]}" update >"$APT_DIR/update.log" 2>&1 || { tail -20 "$APT_DIR/update.log" >&2; die "apt-get update (arm64) failed"; }
# shellcheck disable=SC2086
"${APT[@]}" install -y -d $DEBIAN_PACKAGES >"$APT_DIR/install.log" 2>&1 \
  || { tail -20 "$APT_DIR/install.log" >&2; die "downloading the arm64 packages failed (is python$PY_VERSION in this machine's Debian suite?)"; }
count=0
for deb in "$APT_DIR"/archives/*.deb; do
  dpkg-deb -x "$deb" "$BUILD"
  count=$((count + 1))
done
log "unpacked $count arm64 packages ($((SECONDS - started)) s)"
PYTHON_BIN="$BUILD/usr/bin/python$PY_VERSION"
[ -x "$PYTHON_BIN" ] || die "python$PY_VERSION was not unpacked into the root"

# -- the wheels ----------------------------------------------------------------------------------
if [ -x "$REPO/${VENV:-.venv}/bin/python" ]; then HOST_PY="$REPO/${VENV:-.venv}/bin/python"; else HOST_PY="$(command -v python3)"; fi
"$HOST_PY" -m pip --version >/dev/null 2>&1 || die "$HOST_PY has no pip (needed to download the aarch64 wheels); run scripts/setup.sh"
WHEEL_DIR="$CACHE/arm64-wheels"
mkdir -p "$WHEEL_DIR"
log "downloading the aarch64 wheels: ${WHEELS[*]}"
"$HOST_PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  "${PLATFORM_ARGS[@]}" --python-version "$PY_VERSION" --implementation cp \
  --abi "cp${PY_VERSION/./}" --abi abi3 --abi none -d "$WHEEL_DIR" "${WHEELS[@]}" >&2 \
  || die "pip download of the aarch64 wheels failed"
SITE="$BUILD/usr/lib/python3/dist-packages"
mkdir -p "$SITE"
"$HOST_PY" - "$WHEEL_DIR" "$SITE" "${WHEELS[@]}" <<'EOF'
import re, shutil, sys, zipfile
from pathlib import Path

wheel_dir, site, wanted = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
norm = lambda name: re.sub(r"[-_.]+", "_", name).lower()
for spec in wanted:
    name, version = spec.split("==")
    found = [w for w in wheel_dir.glob("*.whl")
             if norm(w.name.split("-")[0]) == norm(name) and w.name.split("-")[1] == version]
    if len(found) != 1:
        sys.exit(f"arm_root: expected one wheel for {spec} in {wheel_dir}, found {[w.name for w in found]}")
    with zipfile.ZipFile(found[0]) as archive:
        archive.extractall(site)
    # A wheel's .data/purelib and .data/platlib belong in site-packages too.
    for data in site.glob("*.data"):
        for sub in ("purelib", "platlib"):
            if (data / sub).is_dir():
                shutil.copytree(data / sub, site, dirs_exist_ok=True)
        shutil.rmtree(data)
for so in site.rglob("*.so*"):
    so.chmod(0o755)
EOF
log "unpacked the wheels ($((SECONDS - started)) s)"

# -- what the emulated process reads instead of this machine's files ----------------------------
mkdir -p "$BUILD/etc" "$BUILD/proc"
: >"$BUILD/etc/ld.so.cache"
for ((i = 0; i < ncpu; i++)); do
  printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' "$i"
done >"$BUILD/proc/cpuinfo"

# -- .pyc files: with the host's Python when it is the same minor version (bytecode does not
#    depend on the CPU), else with the emulated one ----------------------------------------------
log "compiling .pyc files"
if [ "$("$HOST_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$PY_VERSION" ]; then
  COMPILER=("$HOST_PY")
else
  COMPILER=("$QEMU" -L "$BUILD" -cpu neoverse-n1 "$PYTHON_BIN")
fi
"${COMPILER[@]}" -m compileall -q -j 0 -s "$BUILD" -p "$ROOT" "$BUILD/usr/lib/python$PY_VERSION" "$SITE" >/dev/null \
  || log "warning: some .pyc files were not compiled (the emulated Python compiles them at import)"

# -- smoke test, then swap in -------------------------------------------------------------------
env -i PATH=/usr/bin:/bin LANG=C.UTF-8 "$QEMU" -L "$BUILD" -cpu neoverse-n1 "$PYTHON_BIN" -c \
  'import platform, ssl, numpy; assert platform.machine() == "aarch64", platform.machine()' >&2 \
  || die "the emulated Python does not start (qemu: $QEMU)"
printf '%s\n' "$STAMP" >"$BUILD/$STAMP_NAME"
OLD="$CACHE/arm64-root.old.$$"
[ -e "$ROOT" ] && mv "$ROOT" "$OLD"
mv "$BUILD" "$ROOT"
rm -rf "$OLD"
log "built $ROOT in $((SECONDS - started)) s ($(du -sm "$ROOT" | cut -f1) MB)"
echo "$ROOT"
