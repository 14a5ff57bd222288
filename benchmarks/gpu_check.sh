#!/usr/bin/env bash
# The GPU check, in one go (about 3-5 minutes on one CUDA GPU): the CUDA tests, the apply benchmark
# in bfloat16, the training-step benchmark, and 200-step MiniLM runs of LoRA r=8, circulant and
# Monarch on BBC News, printed as one table (record it in benchmarks/RESULTS.md).
#
#   bash benchmarks/gpu_check.sh                     # on a CUDA machine
#   DEVICE=cpu STEPS=2 bash benchmarks/gpu_check.sh  # a dry run of every command at tiny sizes (CI)
#
# Settings (environment): DEVICE (cuda), STEPS (200), MODEL and DATASET (the packaged MiniLM and
# BBC News), OUT (where the runs go; a new temporary directory). Every part runs even when one
# before it failed; the exit status says whether all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

DEVICE="${DEVICE:-cuda}"
STEPS="${STEPS:-200}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
MODEL_ARGS=()
[[ -n "${MODEL:-}" ]] && MODEL_ARGS=(--model "$MODEL")
RUN_ARGS=(--dataset "${DATASET:-bbc_news}" --batch-size 32 --max-length 128 --eval-every 50 --eval-size all)
APPLY_ARGS=()
STEP_ARGS=()
if [[ "$DEVICE" == cpu ]]; then  # the dry run: the same commands, sized for a CPU
  APPLY_ARGS=(--dims 64 --tokens 64 --reps 1 --families circulant monarch-4x4)
  STEP_ARGS=(--reps 1 --batch-size 4 --max-length 16 --families circulant)
  RUN_ARGS=(--dataset "${DATASET:-bbc_news}" --batch-size 8 --max-length 16 --eval-every 1 --eval-size 16)
fi
failed=()

section() { printf '\n== %s\n' "$1"; }

section "device"
python3 -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|',
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"

section "CUDA tests (skipped without a CUDA device)"
python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py || failed+=("CUDA tests")

section "apply: every family vs dense and LoRA r=8, bfloat16"
python3 -m benchmarks.bench_apply --device "$DEVICE" --dtype bfloat16 "${APPLY_ARGS[@]}" || failed+=("bench_apply")

section "training step: MiniLM, every family vs LoRA r=8"
python3 -m benchmarks.bench_finetune --device "$DEVICE" "${MODEL_ARGS[@]}" "${STEP_ARGS[@]}" || failed+=("bench_finetune")

section "$STEPS-step runs: LoRA r=8, circulant, Monarch (runs in $OUT)"
declare -A METHOD=([lora-r8]="--family lowrank --lora-r 8" [circulant]="--family circulant" [monarch]="--family monarch")
for name in lora-r8 circulant monarch; do
  # shellcheck disable=SC2086  # METHOD holds several words on purpose
  python3 -m surm_core.finetune ${METHOD[$name]} --steps "$STEPS" --device "$DEVICE" "${MODEL_ARGS[@]}" \
    "${RUN_ARGS[@]}" --out "$OUT/$name" > "$OUT/$name.log" 2>&1 || failed+=("run $name (see $OUT/$name.log)")
  tail -n 2 "$OUT/$name.log"
done
python3 - "$OUT" lora-r8 circulant monarch <<'PY' || failed+=("runs table")
import json, sys
from pathlib import Path

out, names = Path(sys.argv[1]), sys.argv[2:]
print(f"{'method':<10} {'trainable':>10} {'steps':>6} {'final acc':>9} {'load s':>7} {'steps s':>8} "
      f"{'eval s':>7} {'wall s':>7} {'examples/s':>11}  device")
for name in names:
    path = out / name / "summary.json"
    if not path.is_file():
        print(f"{name:<10} (no summary: the run failed)")
        continue
    s = json.loads(path.read_text())
    acc = "n/a" if s["final_eval_acc"] is None else f"{s['final_eval_acc']:.4f}"
    print(f"{name:<10} {s['trainable_params']:>10,} {s['steps_done']:>6} {acc:>9} {s['load_s']:>7.1f} "
          f"{s['train_s']:>8.1f} {s['eval_s']:>7.1f} {s['wall_time_s']:>7.1f} {s['examples_per_s'] or 0:>11.1f}  "
          f"{s['device']}, {s['config']['precision']} precision, batch {s['config']['batch_size']} x "
          f"{s['config']['max_length']}, lr {s['config']['lr']:g}, {s['eval_rows']} eval rows")
PY

section "result"
if ((${#failed[@]})); then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "all parts passed"
