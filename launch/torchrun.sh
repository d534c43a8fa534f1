#!/bin/bash
# One machine with several GPUs, processes started by torchrun (python -m cosy_bench
# trainer=ddp starts them itself just as well; torchrun is for those who prefer it).
#   bash launch/torchrun.sh 4 model=resnet18 layer=avgpool explainer=invert
set -euo pipefail
NGPU="${1:?usage: launch/torchrun.sh N_GPUS [overrides...]}"; shift
RUN_DIR="outputs/torchrun/$(date +%Y-%m-%d_%H-%M-%S)"   # one folder for all ranks
torchrun --standalone --nproc_per_node="${NGPU}" -m cosy_bench \
  trainer=ddp trainer.devices="${NGPU}" "hydra.run.dir=${RUN_DIR}" "$@"
