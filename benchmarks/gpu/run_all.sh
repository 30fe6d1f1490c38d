#!/usr/bin/env bash
# The GPU check of issue 13, in one go: install what is missing, run the triton tests on CUDA,
# train lego_400 for 30k iterations, benchmark rendering against gsplat 1.5.3, write the tables.
#
#   bash benchmarks/gpu/run_all.sh              # on a GPU machine; results in $OUT (default outputs/gpu)
#   bash benchmarks/gpu/run_all.sh --dry-run    # the same logic on a CPU: interpreter, tiny sizes
#
# Budget: about 8 minutes on an H200 (tests <= 3 min, training <= 6 min with a stop at 6.5, render
# benchmark <= 2 min; gsplat's CUDA extension builds in the background meanwhile).
# Offline machines: run benchmarks/gpu/prepare_carry.sh first where pip works; it fills
# .gpu_carry/ (wheels of what the GPU image lacks, gsplat's source, lego_400), which this
# script installs from when present. Files written to $OUT (at most 8): summary.md (every table),
# tests.txt, train.log, render.json, env.txt, gsplat_build.log, run_all.log.
set -u
cd "$(dirname "$0")/../.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-outputs/gpu$([ $DRY = 1 ] && echo _dry)}
mkdir -p "$OUT"
exec > >(tee "$OUT/run_all.log") 2>&1
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || PY=python
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[$(elapsed) s] $*"; }

# ---- 1. environment and installs ---------------------------------------------------------------
SITE=/tmp/splatlab_site
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # gsplat: build for the H100/H200 only (faster)
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .gpu_carry/whl ] && ls .gpu_carry/whl/*.whl >/dev/null 2>&1; then
  say "installing carried wheels into $SITE"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu_carry/whl/*.whl
fi
if ! $PY -c "import triton, plyfile, tyro" 2>/dev/null; then
  say "installing the gpu and dev extras from the package index (skipped when offline)"
  timeout 180 $PY -m pip install -q -e ".[dev,gpu]" "gsplat==1.5.3" || say "pip install failed (offline?)"
fi
GSPLAT_PID=""
if [ $DRY = 0 ] && ! $PY -c "import gsplat" 2>/dev/null; then
  SDIST=$(ls .gpu_carry/sdist/gsplat-1.5.3.tar.gz 2>/dev/null || true)
  if [ -n "$SDIST" ]; then  # source only on PyPI: build its extension on first import, below
    say "installing gsplat 1.5.3 from its source ($SDIST)"
    BUILD_NO_CUDA=1 $PY -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" "$SDIST" \
      || say "gsplat install failed"
  fi
fi
if [ $DRY = 0 ] && $PY -c "import gsplat" 2>/dev/null; then
  say "building gsplat's CUDA extension in the background"
  (MAX_JOBS=${MAX_JOBS:-14} timeout 420 \
     $PY -c "from gsplat.cuda._backend import _C; assert _C is not None" \
     > "$OUT/gsplat_build.log" 2>&1) &
  GSPLAT_PID=$!
fi
{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: not here"
  $PY - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
from importlib import metadata
for name in ("triton", "gsplat", "numba", "plyfile", "tyro"):
    try:
        __import__(name)
        print(name, metadata.version(name))
    except Exception as exc:
        print(name, "missing:", type(exc).__name__, exc)
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# ---- 2. the triton tests, compiled kernels on CUDA (interpreted on CPU in --dry-run) -----------
if [ $DRY = 1 ]; then export TRITON_INTERPRET=1; TESTS_K="matches_reference and 1-16-16"; else unset TRITON_INTERPRET; TESTS_K=""; fi
say "tests/test_triton_backend.py"
timeout 240 $PY -m pytest -q -p no:cacheprovider tests/test_triton_backend.py ${TESTS_K:+-k "$TESTS_K"} \
  > "$OUT/tests.txt" 2>&1
TESTS_RC=$?
tail -n 5 "$OUT/tests.txt"

# ---- 3. training: lego_400, 30k iterations ------------------------------------------------------
say "training benchmark"
if [ $DRY = 1 ]; then TRAIN_ARGS="--dry-run --limit-s 1200"; else TRAIN_ARGS="--limit-s 390"; fi
$PY benchmarks/gpu/bench_train_gpu.py $TRAIN_ARGS --output outputs/bench_train_gpu --out "$OUT/train.md" \
  --log "$OUT/train.log"
PLY=$(ls -t outputs/bench_train_gpu/point_cloud/*/point_cloud.ply 2>/dev/null | head -n 1)

# ---- 4. rendering: triton against gsplat ---------------------------------------------------------
if [ -n "$GSPLAT_PID" ]; then
  say "waiting for gsplat's build"
  wait "$GSPLAT_PID" || say "gsplat's build failed or timed out (see gsplat_build.log): its rows will be missing"
fi
say "render benchmark"
RENDER_ARGS=$([ $DRY = 1 ] && echo "--dry-run" || echo "--sweep")
$PY benchmarks/bench_render.py --backend triton $RENDER_ARGS ${PLY:+--ply "$PLY"} --out "$OUT/render.md" \
  --json "$OUT/render.json"

# ---- 5. summary ---------------------------------------------------------------------------------
{
  echo "# GPU check (issue 13) — $(date -u +%F)"; echo
  echo '```'; cat "$OUT/env.txt"; echo '```'; echo
  echo "## Tests (tests/test_triton_backend.py, exit $TESTS_RC)"; echo; echo '```'; tail -n 15 "$OUT/tests.txt"; echo '```'
  echo; echo "## Training"; echo; cat "$OUT/train.md" 2>/dev/null || echo "not measured"
  echo; echo "## Rendering"; echo; cat "$OUT/render.md" 2>/dev/null || echo "not measured"
  echo; echo "Total: $(elapsed) s"
} > "$OUT/summary.md"
rm -f "$OUT/render.md" "$OUT/train.md"  # both are in summary.md (keeps $OUT within 8 files)
say "done: $OUT/summary.md"
