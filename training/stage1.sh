#!/usr/bin/env bash
# E2Rank stage I: the embedding model, trained with InfoNCE alone (temperature 0.03; the positive and
# the other documents of the example and of the batch as negatives), queries as in stage II.
# DESIGN.md §1 gives no other stage-I setting: this recipe keeps stage II's (AdamW lr 5e-6, linear
# schedule, 3% warm-up, 1 epoch, bf16, gradient checkpointing, 128 queries per step).
#
#   training/stage1.sh                                                    # one process (CPU or one GPU)
#   ACCELERATE_CONFIG=training/accelerate/multi_gpu_8.yaml training/stage1.sh
#   training/stage1.sh --max-steps 10 --overwrite                         # more flags of 'e2rank train'
#
# Run from the repository root. Every variable below can be set in the environment.
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen3-0.6B}              # the model to start from: a hub id or a directory
DATA=${DATA:-runs/pairs.jsonl}               # {query, pos, neg} pairs (e2rank build-data pairs) or stage-II records
OUTPUT=${OUTPUT:-runs/e2rank-stage1}         # training/stage2.sh starts from here
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

args=(train --stage 1 --model "$MODEL" --data "$DATA" --output "$OUTPUT"
      --epochs 1 --lr 5e-6 --warmup-ratio 0.03 --temperature 0.03
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
