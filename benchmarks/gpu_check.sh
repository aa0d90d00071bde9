#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (run from the repo root):
#   bash benchmarks/gpu_check.sh        (writes logs and metrics under $OUT)
#   PUBLISH=only bash benchmarks/gpu_check.sh   (only the MinGRU / MinLSTM / SLSTM weights to
#   publish, trained as the shipped LSTM / GRU / RNN were: ~2.5 min each, so run it as its own
#   command; CORES="mingru" picks some; PUBLISH=1 runs them after the checks)
# Pure-Python dependencies the GPU machine lacks may be carried in .gpu/site.
set -u
export PYTHONPATH="$PWD:$PWD/.gpu/site:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
OUT=${OUT:-/tmp/rnn-zoo-gpu}; mkdir -p "$OUT"
TINY="fit --config recipes/char_lm/tiny.yaml --trainer.accelerator gpu --trainer.enable_progress_bar false"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'lightning', pl.__version__)"
if [ "${PUBLISH:-}" != only ]; then
echo "=== 1. explicit backend == fused (cuDNN) on the GPU"
timeout 120 python benchmarks/gpu_equivalence.py
[ -n "${SKIP_SPEED:-}" ] || { echo "=== 2. fwd+bwd time per core on the GPU (cuDNN vs explicit)"
timeout 150 python benchmarks/cores.py --device cuda --batch 64 --hidden 512 --repeats 20; }
for run in fp32:32-true bf16:bf16-mixed; do
  name=${run%%:*}; precision=${run#*:}
  echo "=== 3. tiny recipe, precision $precision, 300 steps"
  timeout 120 python -m zoo.cli $TINY --trainer.precision "$precision" --trainer.max_steps 300 \
    --trainer.val_check_interval 300 --trainer.logger CSVLogger --trainer.logger.save_dir "$OUT/$name"
  tail -n 2 "$(find "$OUT/$name" -name metrics.csv | head -1)"
done
echo "=== 4. DDP on one GPU (nccl)"
timeout 120 python -m zoo.cli $TINY --trainer.strategy ddp --trainer.devices 1 --trainer.max_steps 50 \
  --trainer.val_check_interval 50 --trainer.logger CSVLogger --trainer.logger.save_dir "$OUT/ddp"
tail -n 2 "$(find "$OUT/ddp" -name metrics.csv | head -1)"
[ -n "${SKIP_SPEED:-}" ] || { echo "=== 5. Lightning task vs plain PyTorch loop on the GPU"
timeout 150 python benchmarks/char_lm_throughput.py --device cuda --hidden 512 --batch 64 --steps 100; }
[ -n "${SKIP_SPEED:-}" ] || { echo "=== 6. new cores against cuDNN (B=32, H=256, T = 100 / 512 / 2048)"
timeout 150 python benchmarks/cores.py --device cuda --steps 100 512 2048; }
[ -n "${SKIP_SPEED:-}" ] || { echo "=== 7. paper-size translation models, bf16 at the paper's batch: words/s, Lightning vs plain"
timeout 240 python benchmarks/paper_scale.py --device cuda --only translation/sutskever-wmt14-enfr --steps 2; }
[ -n "${SKIP_SPEED:-}" ] || { echo "=== 7b. WMT output layer + loss, plain vs chunked_loss (bf16): ms and peak MB"
timeout 120 python benchmarks/translation_loss.py --device cuda --rounds 2; }
fi
[ -z "${PUBLISH:-}" ] || for core in ${CORES:-mingru minlstm slstm}; do
  echo "=== 8. PUBLISH: shakespeare-$core, the published cells' 90 s GPU budget, exported fp16"
  recipe=recipes/char_lm/shakespeare-$core.yaml
  best=runs/char_lm/shakespeare-$core/checkpoints/best.ckpt
  rm -f "$best"  # never export an earlier run's weights
  timeout 300 python -m zoo.cli fit --config $recipe --trainer.accelerator gpu \
    --trainer.enable_progress_bar false --trainer.logger CSVLogger --trainer.logger.save_dir "$OUT/$core" \
    && [ -f "$best" ] || { echo "fit of $core failed: nothing exported"; continue; }
  for stage in validate test; do  # the manifest's val_bpc, test_bpc and test_ppl, in float32
    timeout 120 python -m zoo.cli $stage --config $recipe --ckpt_path $best --trainer.accelerator gpu \
      --trainer.precision 32-true --trainer.enable_progress_bar false --trainer.logger false \
      2>&1 | tee "$OUT/$core-$stage.log"
  done
  mkdir -p "$OUT/published"
  python -m zoo.cli export --checkpoint $best --name char_lm-$core-shakespeare-v1 \
    --out "$OUT/published" --fp16 --force | tee "$OUT/published/$core.yaml"
done
