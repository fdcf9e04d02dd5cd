#!/bin/bash
# The GPU check of the torch families, prepared for a session that has the device machine (a GPU box with
# Python 3.12 and a CUDA build of torch, but none of this project's other dependencies, and no network).
#
# Here, once:   bash benchmarks/gpu/run_on_device.sh --fetch-wheels   (cp312 wheels into .whl/, git-ignored)
# There:        run with carry [".whl"] and the command `bash benchmarks/gpu/run_on_device.sh`
#
# It checks that the learner's torch code path trains on CUDA when present and honours no_cuda, that a GPU
# learner's proposal is scored identically by another GPU learner and within 1e-3 by a CPU learner, and
# records propose seconds on GPU against CPU; then it runs the torch model-zoo tests on the GPU.
set -o pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = "--fetch-wheels" ]; then
  pins=$(grep -E '^(grpcio|grpcio-health-checking|grpcio-reflection|protobuf|pydantic|pydantic_core|pydantic-settings|python-dotenv|annotated-types|typing-inspection)==' requirements.lock)
  exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $pins typing-extensions
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# The import names map onto the source folders as pyproject's package-dir does.
mkdir -p /tmp/pkgs
ln -sfn "$PWD/services/colearn_learner" /tmp/pkgs/colearn_learner
ln -sfn "$PWD/proto/colearn_contract" /tmp/pkgs/colearn_contract
ln -sfn "$PWD/backend_client" /tmp/pkgs/backend_client
export PYTHONPATH=/tmp/pkgs:/tmp/site PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 benchmarks/gpu/check_torch_cuda.py 2>&1 | tee "$OUT/gpu_check.log"
rc1=$?
python3 -m pytest -q -p no:cacheprovider tests/models/test_torch_families_grpc.py \
  tests/models/test_torch_weights_and_scores.py 2>&1 | tee "$OUT/pytest.log" | tail -30
rc2=$?
echo "rc check=$rc1 pytest=$rc2"
[ "$rc1" = 0 ] && [ "$rc2" = 0 ]
