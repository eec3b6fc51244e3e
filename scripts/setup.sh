#!/usr/bin/env bash
# Create ./.venv and install airflow-neo with the local backend (TVM) and the test tools.
# As root on Debian/Ubuntu it also installs the ARM cross toolchains used for ARM targets.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v arm-linux-gnueabihf-gcc >/dev/null 2>&1; then
    echo "==> installing ARM cross toolchains (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf >/dev/null
  fi
  # tests/ui/browser/ drive Debian's Chromium through Playwright (no browser is downloaded).
  if [ ! -x /usr/bin/chromium ]; then
    echo "==> installing Chromium for the browser tests (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
fi

echo "==> virtualenv $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
echo "==> torch (CPU build)"
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
echo "==> airflow-neo[local,torch,tensorflow,cuda,coreml,test,docs]"
"$VENV/bin/python" -m pip install -q -e ".[local,torch,tensorflow,cuda,coreml,test,docs]"
# The real-model tests (transformers, torchvision, timm classes with random weights) need those
# packages. PyPI's torchvision for torch 2.13 declares a CUDA torch: install it, transformers and
# timm without dependencies next to the CPU torch above, then their pure-Python dependencies.
echo "==> real-model test packages (torchvision, transformers, timm; --no-deps)"
"$VENV/bin/python" -m pip install -q --no-deps "torchvision==0.28.0" "transformers>=4.40" "timm>=1.0"
"$VENV/bin/python" -m pip install -q "tokenizers>=0.19" "safetensors>=0.4" "huggingface-hub>=0.23" "tqdm>=4.60" \
  "regex" "typer" "pyyaml" "pillow"
