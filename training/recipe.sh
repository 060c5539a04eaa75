# Shared by stage1.sh and stage2.sh, which source it after setting MODEL, DATA, OUTPUT and the
# array stage_args (their 'e2rank train' flags): works out the gradient accumulation that makes
# BATCH_SIZE x processes x accumulation = QUERIES_PER_STEP, then launches, through accelerate when
# ACCELERATE_CONFIG names a config. The caller's own arguments ("$@") come last and win.
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

args=(train "${stage_args[@]}" --batch-size "$BATCH_SIZE" --gradient-accumulation "$accumulation")
if [[ "$BF16" == 1 ]]; then
    args+=(--bf16)
fi
args+=("$@")  # last, so that a flag given here wins over the recipe's
if [[ -n "$ACCELERATE_CONFIG" ]]; then
    accelerate launch --config_file "$ACCELERATE_CONFIG" -m pyterrier_e2rank.cli.main "${args[@]}"
else
    e2rank "${args[@]}"
fi
