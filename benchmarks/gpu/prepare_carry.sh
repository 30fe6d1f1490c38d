#!/usr/bin/env bash
# Fill .gpu_carry/ for an offline GPU machine (run it where pip reaches PyPI, then carry the
# folder): wheels of what the GPU image lacks, gsplat 1.5.3's source, and lego_400.
#
#   bash benchmarks/gpu/prepare_carry.sh           # then: run(command="bash benchmarks/gpu/run_all.sh",
#                                                  #           carry=[".gpu_carry"])
# The GPU image (see the device notes) has Python 3.12, torch and triton; splatlab also needs
# tyro (and its dependencies) and plyfile. About 28 MB in all, under the 64 MiB a call carries.
set -eu
cd "$(dirname "$0")/../.."
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.gpu_carry/' "$exclude" 2>/dev/null || echo '/.gpu_carry/' >> "$exclude"
mkdir -p .gpu_carry/whl .gpu_carry/sdist .gpu_carry/data
# pip prepares gsplat's metadata by running its setup.py, which imports torch: use a Python
# that has torch (the repository's .venv when there is one).
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
# Versions verified with this repository's tests (the local venv's).
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu_carry/whl tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 typing-extensions==4.16.0 \
  plyfile==1.1.5
# gsplat is source-only on PyPI since 1.4: its CUDA extension is built on the GPU machine.
BUILD_NO_CUDA=1 $PY -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d .gpu_carry/sdist \
  gsplat==1.5.3 \
  || echo "gsplat 1.5.3 source not downloaded: the render benchmark will run without it"
if [ -d ../shared/data/lego_400 ] && [ ! -d .gpu_carry/data/lego_400 ]; then
  cp -r ../shared/data/lego_400 .gpu_carry/data/
fi
du -sh .gpu_carry
