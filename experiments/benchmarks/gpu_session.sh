#!/usr/bin/env bash
# What a session lent a GPU runs, in one go: the GPU and capture tests, then rows g (eager against captured step)
# and f (an 8-job sweep on one GPU) of the benchmarks, everything written under OUT.
#
#   bash experiments/benchmarks/gpu_session.sh OUT [STEPS]   # STEPS: comma-separated of setup,tests,capture,sweep
#
# Each benchmark row is its own run.py call and report (RESULTS-gpu-capture.md, RESULTS-gpu-sweep.md), so a row cut
# short by the machine's time limit loses only itself; copy them to experiments/benchmarks/ to record them.
#
# On a machine whose Python lacks aelab's pure-Python dependencies (the lent GPU machines have torch and Lightning
# but no Hydra), put their wheels in .whl/ first (hydra-core, omegaconf, antlr4-python3-runtime, pydantic,
# pydantic-core, annotated-types, typing-inspection, hydra-joblib-launcher): setup installs them into /tmp/site.
# For a Python 3.12 machine, from a checkout with the project's venv (antlr4's 4.9.3 is an sdist: build its wheel):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl pydantic_core==VERSION pydantic annotated-types \
#       typing-inspection hydra-core omegaconf hydra-joblib-launcher     # the versions `pip list` shows here
#   pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
# AELAB_DATA_DIR must hold MNIST/raw. Each step has its own time limit so that one hang cannot eat the others'.
set -u
OUT=${1:?usage: gpu_session.sh OUT [STEPS]}
STEPS=${2:-setup,tests,capture,sweep}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 AELAB_CACHE_DIR=${AELAB_CACHE_DIR:-/tmp/aelab-cache} AELAB_OUTPUT_DIR=/tmp/aelab-outputs
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/session.log"; }
has() { [[ ",$STEPS," == *",$1,"* ]]; }

if [ -d .whl ]; then  # every step needs them on the path, setup or not
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl >>"$OUT/session.log" 2>&1 || { log "installing .whl/ failed"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if has setup; then
    log "setup: $(python3 --version), $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
    timeout 180 python3 -m pip install -q --no-deps --no-build-isolation --ignore-requires-python -e . \
        >>"$OUT/session.log" 2>&1 || { log "pip install -e . failed"; exit 1; }
    python3 -c "import torch, lightning, hydra; print('torch', torch.__version__, 'lightning', lightning.__version__,
'hydra', hydra.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$OUT/session.log"
fi
if has tests; then
    log "tests: tests/test_gpu.py tests/test_capture.py"
    timeout 200 python3 -m pytest -q -p no:cacheprovider -m "slow or not slow" -rA tests/test_gpu.py \
        tests/test_capture.py >"$OUT/pytest.log" 2>&1
    log "tests: exit $? ($(tail -1 "$OUT/pytest.log"))"
fi
bench() {  # bench NAME SECTION LIMIT: one row's run.py call
    log "bench: $2"
    timeout "$3" python3 experiments/benchmarks/run.py --only "$2" --out "$OUT/RESULTS-gpu-$1.md" >"$OUT/$1.log" 2>&1
    log "bench: $2: exit $?"
}
if has capture; then bench capture capture 240; fi
if has sweep; then bench sweep gpu_sweep 200; fi
log "done"
