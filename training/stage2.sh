#!/usr/bin/env bash
# E2Rank stage II as the paper (pt_docs/specification.rst §9): from the stage-I model, per example a query,
# 16 documents and a teacher ranking; 1.0 x InfoNCE (temperature 0.03) + 2.0 x RankNet; AdamW lr 5e-6, linear
# schedule, 3% warm-up, 1 epoch, bf16, gradient checkpointing, 128 queries per step.
#
#   training/stage2.sh                                                    # one process (CPU or one GPU)
#   ACCELERATE_CONFIG=training/accelerate/deepspeed_zero3_8.yaml training/stage2.sh
#   training/stage2.sh --max-steps 10 --overwrite                         # more flags of 'e2rank train'
#
# Run from the repository root. Every variable below can be set in the environment, and so can
# ACCELERATE_CONFIG, QUERIES_PER_STEP, BATCH_SIZE and BF16 (training/recipe.sh).
set -euo pipefail

MODEL=${MODEL:-runs/e2rank-stage1}           # the stage-I model (training/stage1.sh's output)
DATA=${DATA:-runs/msmarco.jsonl}             # stage-II records: e2rank build-data rankllm|dataset|pairs
OUTPUT=${OUTPUT:-runs/e2rank-stage2}
stage_args=(--stage 2 --model "$MODEL" --data "$DATA" --output "$OUTPUT"
            --epochs 1 --lr 5e-6 --warmup-ratio 0.03 --infonce-weight 1.0 --ranknet-weight 2.0 --temperature 0.03
            --gradient-checkpointing
            --query-max-length 512 --doc-max-length 1024)
source "$(dirname "$0")/recipe.sh"
