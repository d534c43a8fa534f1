#!/usr/bin/env bash
# Regenerate docs/bench/*.md, the bench tables that docs/performance.md and
# docs/reliability.md include, each stamped by its command (date, machine, load, command line).
#   bash docs/bench/regenerate.sh small   # minutes: reduced sizes (check that all runs)
#   bash docs/bench/regenerate.sh full    # hours: the sizes the targets are judged at
# Run it alone on an idle machine (timings); a GPU, where present, is used by the benches
# that have a GPU path. NAMES after the size run only those files: ... full scorers rounds
set -euo pipefail
cd "$(dirname "$0")/../.."
size="${1:-small}"; shift || true
out=docs/bench
bench() {  # bench FILE NAME ARGS...: one bench, its output in docs/bench/FILE.md
    local file="$1"; shift
    if [ "${#only[@]}" -gt 0 ] && [[ ! " ${only[*]} " =~ " ${file} " ]]; then return 0; fi
    echo "== $file: python -m cosy_bench.bench $*" >&2
    python -m cosy_bench.bench "$@" --markdown "$out/$file.md" \
        || echo "warning: bench $file exited with an error (its file says which)" >&2
}
only=("$@")
case "$size" in
small)
    bench scorers scorers --neurons 64 --control 5000 --concept 50 --repeats 1 --utest
    bench activations activations --images 48 --batch-size 16 --layers layer2,avgpool
    bench activations_gpu_decode activations --images 48 --batch-size 16 --decode gpu \
        --precision bfloat16 --layers layer2,avgpool
    bench synthesis synthesis --size 128 --steps 2 --images 2 --batch 2 --scale 16
    bench synthesis_cascade synthesis --model stable_cascade --size 128 --steps 1 --images 2 \
        --batch 2 --scale 16
    bench rounds rounds --layers concepts --explainers ground_truth,random --max 6 --round 3 \
        --extra dataset.n=300 'neurons.ids=[0,3,7]'
    bench scaling scaling --sizes 2000,10000 --neurons 64 --concepts 100 --clip-concepts 500 \
        --clip-dim 64
    bench scaling_budget scaling --sizes 2000,10000 --neurons 64 --methods clip_dissect,invert \
        --concepts 100 --clip-concepts 500 --clip-dim 64 --max-memory-gb 0.05
    bench explainers explainers --invert-samples 5000 --invert-concepts 100 --invert-neurons 64 \
        --clip-images 2000 --clip-concepts 2000 --clip-neurons 64 --dissect-images 100 \
        --dissect-neurons 6 --dissect-concepts 200 --dissect-timed-images 20 --mask-size 16 \
        --compexp-units 2 --compexp-images 80
    bench milan milan --images 32 64 --batch-size 16 --units 1 --batch-units 1
    bench faults faults --trials 1 explainer=ground_truth 'neurons.ids=[0,1,2]' n_images=4 \
        dataset.n=100
    bench sae sae --n 10000 --epochs 5
    ;;
full)
    bench scorers scorers --utest
    bench activations activations --images 2000 --decode reduced
    bench activations_gpu_decode activations --images 2000 --decode gpu --precision bfloat16
    bench synthesis synthesis
    bench synthesis_cascade synthesis --model stable_cascade
    bench rounds rounds
    bench scaling scaling --sizes 10000,50000,200000
    bench scaling_budget scaling --sizes 10000,50000,200000 --neurons 512 \
        --methods clip_dissect,invert --max-memory-gb 4
    bench explainers explainers
    bench milan milan
    bench faults faults --trials 20
    bench sae sae
    ;;
*) echo "usage: bash docs/bench/regenerate.sh small|full [NAME ...]" >&2; exit 2 ;;
esac
