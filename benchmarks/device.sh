#!/usr/bin/env bash
# The GPU checks, as one prepared script for a GPU machine (about 9 minutes for
# "checks", 9 for "cifar200", 1 for "ddp"). Results land in $OUT (default ./device-out).
#
#   benchmarks/device.sh checks     # CUDA tests, throughput table with the candidate rows, GPU decoding
#   benchmarks/device.sh cifar200   # the 200-epoch CIFAR-10 run of the cifar10 recipe (EXTRA="--set ..." for options)
#   benchmarks/device.sh ddp        # DDP + SyncBatchNorm, two processes on the one GPU
#   benchmarks/device.sh imagenet   # ResNet-50 at 224 px (imagenet recipe, 256 px jpeg cache on disk): end to end vs its
#       compiled step vs lightly at 224 px, and the disk source alone (nvJPEG); about 7 minutes
#   benchmarks/device.sh sweep "--lr 0.06" "--batch-size 256"   # cifar10 recipe variants, side by side
#       on the one GPU (EPOCHS, default 100; LIMIT seconds, default 560): tuning on val in one call
#
# Data: .devdata/cifar10.tar.gz (train/ and val/ JPEG folders; make it with
#   (cd ../shared/data/cifar10 && tar -cf - train val | gzip -1) > .devdata/cifar10.tar.gz)
# lightly for the side-by-side rows: its wheel in .whl/ (the GPU machine has no internet;
# lightly's transforms, heads and loss need none of its other dependencies there):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl lightly==1.6.0
# Both .devdata/ and .whl/ are git-ignored; name them in the device tool's carry.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-device-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 LIGHTLY_DID_VERSION_CHECK=True
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
if [ ! -d /tmp/cifar10/train ] && [ -f .devdata/cifar10.tar.gz ]; then
    mkdir -p /tmp/cifar10 && tar -xzf .devdata/cifar10.tar.gz -C /tmp/cifar10
fi
export SIMSIAM_CACHE=/tmp/simsiam-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision, lightning; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"

case "${1:-checks}" in
checks)
    python3 -m pytest -q -p no:cacheprovider tests/test_augment.py tests/test_model.py 2>&1 | tail -3 | tee "$OUT/pytest.log"
    timeout 450 python3 benchmarks/throughput.py gpu --data /tmp/cifar10/train --json "$OUT/throughput.json" 2>&1 | grep -v Warning | tee "$OUT/throughput.log"
    timeout 60 python3 benchmarks/throughput.py decode --count 4000 2>&1 | tee "$OUT/decode.log"
    ;;
sweep)
    shift
    # Decode the cache once, so the runs do not all build it at the same time.
    python3 -c "from simsiam.data import load; load('/tmp/cifar10/train', progress=False); load('/tmp/cifar10/val', progress=False)"
    pids=()
    i=0
    for options in "$@"; do
        i=$((i + 1))
        echo "run $i: $options"
        # shellcheck disable=SC2086  # each argument is a list of options
        timeout "${LIMIT:-560}" python3 benchmarks/cifar10.py --train /tmp/cifar10/train --val /tmp/cifar10/val --epochs "${EPOCHS:-100}" \
            --knn-every 10 --out "/tmp/sweep$i" --results "$OUT/sweep$i.md" $options > "$OUT/sweep$i.log" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
    for j in $(seq 1 $i); do
        echo "== run $j: ${!j}"
        grep -E "epoch [0-9]*0/|rror|^\|" "$OUT/sweep$j.log" | tail -12
        cp "/tmp/sweep$j/metrics.csv" "$OUT/sweep$j-metrics.csv" 2>/dev/null
    done
    ;;
ddp)
    timeout 90 python3 benchmarks/ddp_gpu_check.py 2>&1 | tail -15 | tee "$OUT/ddp.log"
    ;;
imagenet)
    # 8,000 CIFAR-10 images upsampled to 256 px JPEGs stand in for a folder of photos (made once under /tmp).
    python3 -m pytest -q -p no:cacheprovider tests/test_big_data.py 2>&1 | tail -3 | tee "$OUT/pytest-big-data.log"
    timeout 540 python3 benchmarks/sources.py imagenet --cifar /tmp/cifar10/train --count "${COUNT:-8000}" 2>&1 | grep -v Warning \
        | tee "$OUT/imagenet.log"
    ;;
cifar200)
    # The run folder stays in /tmp (checkpoints are large); its small files are copied
    # to $OUT every 15 s so a run cut short still brings its curve back.
    (while sleep 15; do cp /tmp/run200/metrics.csv "$OUT/" 2>/dev/null; done) &
    copier=$!
    timeout "${LIMIT:-560}" python3 benchmarks/cifar10.py --train /tmp/cifar10/train --val /tmp/cifar10/val --epochs "${EPOCHS:-200}" \
        --knn-every 10 --out /tmp/run200 --results "$OUT/results_row.md" ${EXTRA:-} 2>&1 | grep -v Warning > "$OUT/cifar200.log"
    kill $copier
    grep -E "epoch [0-9]*0/|kNN|rror|^\|" "$OUT/cifar200.log" | tail -40
    cp /tmp/run200/metrics.csv /tmp/run200/training.png /tmp/run200/metrics.json "$OUT/" 2>/dev/null
    ;;
esac
