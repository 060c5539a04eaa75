#!/usr/bin/env bash
# E2Rank stage I: the embedding model, trained with InfoNCE alone (temperature 0.03; the positive and
# the other documents of the example and of the batch as negatives), queries as in stage II.
# pt_docs/specification.rst §9 gives no other stage-I setting: this recipe keeps stage II's (AdamW lr 5e-6, linear
# schedule, 3% warm-up, 1 epoch, bf16, gradient checkpointing, 128 queries per step).
#
#   training/stage1.sh                                                    # one process (CPU or one GPU)
#   ACCELERATE_CONFIG=training/accelerate/multi_gpu_8.yaml training/stage1.sh
#   training/stage1.sh --max-steps 10 --overwrite                         # more flags of 'e2rank train'
#
# Run from the repository root. Every variable below can be set in the environment, and so can
# ACCELERATE_CONFIG, QUERIES_PER_STEP, BATCH_SIZE and BF16 (training/recipe.sh).
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen3-0.6B}              # the model to start from: a hub id or a directory
DATA=${DATA:-runs/pairs.jsonl}               # {query, pos, neg} pairs (e2rank build-data pairs) or stage-II records
OUTPUT=${OUTPUT:-runs/e2rank-stage1}         # training/stage2.sh starts from here
stage_args=(--stage 1 --model "$MODEL" --data "$DATA" --output "$OUTPUT"
            --epochs 1 --lr 5e-6 --warmup-ratio 0.03 --temperature 0.03
            --gradient-checkpointing
            --query-max-length 512 --doc-max-length 1024)
source "$(dirname "$0")/recipe.sh"
