#!/usr/bin/env bash
# make test-arm: every family's exported fp32 and int8 models on an emulated ARM64 device
# (Debian arm64 userland under qemu user-mode emulation, aarch64 wheels, no torch), compared
# with x86 onnxruntime of the same version and thread count. See benchmarks/arm/README.md.
#
# Environment (all optional):
#   EDGELSTM_ARM_CACHE    cache of rootfs + wheels (default /var/cache/edgelstm-arm as root,
#                         else ~/.cache/edgelstm-arm); delete it to rebuild from scratch
#   QEMU_CPU              emulated core (default neoverse-n1). 'max' = SVE2+SME: see docs/ARM.md
#   EDGELSTM_ARM_QEMU     qemu-aarch64 binary (default: Debian's qemu-aarch64-static, 7.2 on bookworm)
#   EDGELSTM_ARM_THREADS  intra-op threads on BOTH sides (default 1)
#   EDGELSTM_ARM_SOURCE   pipeline (default: train+export+quantize via the CLI) | torch | dir
#   EDGELSTM_ARM_MODELS   directory of exported models (implies EDGELSTM_ARM_SOURCE=dir)
#   EDGELSTM_ARM_REQUIRE  1: a machine that cannot emulate ARM fails (exit 3) instead of skipping
# Extra arguments go to benchmarks/arm/driver.py (--help for the list).
# Exit: 0 pass (or loud SKIPPED line), 1 a comparison failed, 2 set-up error.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { echo "test-arm: ERROR: $PY not found (run make install first)" >&2; exit 2; }
args=()
if [ -n "${EDGELSTM_ARM_MODELS:-}" ]; then args+=(--source dir --models "$EDGELSTM_ARM_MODELS"); fi
exec "$PY" benchmarks/arm/driver.py "${args[@]}" "$@"
