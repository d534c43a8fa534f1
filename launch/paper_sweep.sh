#!/bin/bash
# CoSy's published evaluation at full scale on a SLURM cluster: every (model, layer,
# explainer) of the paper's tables as one DDP job of a Hydra sweep (SLURM job arrays),
# 50 neurons (seed 42) x 50 SDXL images each, prompt p5, results on W&B and in multirun/.
#
#   IMAGENET_VAL_DIR=/data/imagenet/val IMAGENET_TRAIN_DIR=/data/imagenet/train \
#   PLACES365_VAL_DIR=/data/places365/val PLACES365_PROBE_DIR=/data/broden/images \
#   PUBLISHED=/data/published_explanations PARTITION=gpu GPUS=4 bash launch/paper_sweep.sh
#
# Jobs share COSY_CACHE_DIR: images of an explanation are generated once for all methods
# that give it, the control activations of a (model, layer) once for all its jobs.
# Afterwards: python -m cosy_bench.leaderboard multirun/
set -euo pipefail
: "${IMAGENET_VAL_DIR:?}" "${IMAGENET_TRAIN_DIR:?}"
export COSY_CACHE_DIR="${COSY_CACHE_DIR:-$PWD/.cache/cosy_bench}"   # shared by all nodes
SLURM=(hydra/launcher=slurm trainer=ddp "hydra.launcher.partition=${PARTITION:-gpu}"
       "hydra.launcher.gpus_per_node=${GPUS:-4}" "hydra.launcher.timeout_min=${TIME_MIN:-480}"
       "logger=${LOGGER:-wandb}")
run() { python -m cosy_bench -m "${SLURM[@]}" "$@"; }

# ImageNet: INVERT, CLIP-Dissect and MILAN (the published `base` decoder) computed here,
# every layer of ResNet18 + ViT-B/16's
run experiment=cosy_imagenet explainer=invert,clip_dissect,milan model=resnet18 \
    layer=layer1,layer2,layer3,layer4,avgpool,fc
run experiment=cosy_imagenet explainer=invert,clip_dissect,milan model=vit_b16 layer=features

# Places365: the CSAIL models, probe = a labelled image folder (e.g. Broden)
if [ -n "${PLACES365_VAL_DIR:-}" ]; then
  run experiment=cosy_places365 explainer=invert,clip_dissect,milan \
      model=resnet50_places365 layer=avgpool "probe.root=${PLACES365_PROBE_DIR:?}"
  run experiment=cosy_places365 explainer=invert,clip_dissect,milan \
      model=densenet161_places365 layer=features "probe.root=${PLACES365_PROBE_DIR:?}"
fi

# The published explanations (MILAN, FALCON, and the authors' INVERT/CLIP-Dissect files):
# one sweep per CSV, its model and layer from the file name MODEL-LAYER.csv
if [ -n "${PUBLISHED:-}" ]; then
  declare -A MODEL=([resnet18]=resnet18 [vit_b_16]=vit_b16 [resnet50_places]=resnet50_places365
                    [densenet161_places]=densenet161_places365)
  for csv in "${PUBLISHED}"/{MILAN,FALCON,INVERT,CLIP-Dissect}/*.csv; do
    [ -e "$csv" ] || continue
    name="$(basename "$csv" .csv)"; arch="${name%-*}"; layer="${name##*-}"
    [[ "$name" == *_original ]] && continue
    model="${MODEL[$arch]:-}"; [ -n "$model" ] || continue
    exp=cosy_imagenet; [[ "$arch" == *_places ]] && exp=cosy_places365
    method="$(basename "$(dirname "$csv")" | tr 'A-Z-' 'a-z_')"   # milan, clip_dissect, ...
    run "experiment=${exp}" explainer=precomputed "explainer.path=${csv}" \
        "explainer_name=published_${method}" "model=${model}" "layer=${layer}" \
      || echo "failed: ${csv}" >&2
  done
fi
