#!/usr/bin/env bash
# E2Rank stage II as the paper (DESIGN.md §1): from the stage-I model, per example a query, 16 documents
# and a teacher ranking; 1.0 x InfoNCE (temperature 0.03) + 2.0 x RankNet; AdamW lr 5e-6, linear
# schedule, 3% warm-up, 1 epoch, bf16, gradient checkpointing, 128 queries per step.
#
#   training/stage2.sh                                                    # one process (CPU or one GPU)
#   ACCELERATE_CONFIG=training/accelerate/deepspeed_zero3_8.yaml training/stage2.sh
#   training/stage2.sh --max-steps 10 --overwrite                         # more flags of 'e2rank train'
#
# Run from the repository root. Every variable below can be set in the environment.
set -euo pipefail

MODEL=${MODEL:-runs/e2rank-stage1}           # the stage-I model (training/stage1.sh's output)
DATA=${DATA:-runs/msmarco.jsonl}             # stage-II records: e2rank build-data rankllm|dataset|pairs
OUTPUT=${OUTPUT:-runs/e2rank-stage2}
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-}     # a file of training/accelerate/; empty: no accelerate launch
QUERIES_PER_STEP=${QUERIES_PER_STEP:-128}    # per optimizer step, over all processes
BATCH_SIZE=${BATCH_SIZE:-16}                 # queries per process and forward pass
BF16=${BF16:-1}                              # 0: float32 (CPUs, where bf16 autocast is slow)

# the gradient accumulation that makes BATCH_SIZE x processes x accumulation = QUERIES_PER_STEP
processes=1
if [[ -n "$ACCELERATE_CONFIG" ]]; then
    processes=$(awk '$1 == "num_processes:" {print $2}' "$ACCELERATE_CONFIG")
    if [[ -z "$processes" ]]; then
        echo "$ACCELERATE_CONFIG names no num_processes" >&2
        exit 2
    fi
fi
if (( QUERIES_PER_STEP % (BATCH_SIZE * processes) != 0 )); then
    echo "QUERIES_PER_STEP=$QUERIES_PER_STEP is not a multiple of BATCH_SIZE=$BATCH_SIZE x $processes processes" >&2
    exit 2
fi
accumulation=$(( QUERIES_PER_STEP / (BATCH_SIZE * processes) ))

args=(train --stage 2 --model "$MODEL" --data "$DATA" --output "$OUTPUT"
      --epochs 1 --lr 5e-6 --warmup-ratio 0.03 --infonce-weight 1.0 --ranknet-weight 2.0 --temperature 0.03
      --batch-size "$BATCH_SIZE" --gradient-accumulation "$accumulation" --gradient-checkpointing
      --query-max-length 512 --doc-max-length 1024)
if [[ "$BF16" == 1 ]]; then
    args+=(--bf16)
fi
args+=("$@")  # last, so that a flag given here wins over the recipe's
if [[ -n "$ACCELERATE_CONFIG" ]]; then
    accelerate launch --config_file "$ACCELERATE_CONFIG" -m pyterrier_e2rank.app.cli "${args[@]}"
else
    e2rank "${args[@]}"
fi
