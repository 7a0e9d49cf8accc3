#!/usr/bin/env bash
# Issue 4 in one call on a GPU machine (the `device` tool; ~15 minutes of device time a session). Two
# trainings share the GPU at once (the first prior's stage 1 ran at ~820 crops/s beside two other trainings,
# ~2,500 in all, more than the 1,880 of one training alone at batch 96):
#   photo      the gray prior, fine-tuned from builtin:photo's weights (the EMA starts from them);
#   photo-rgb  a colour (3-channel) prior: continued from builtin:photo-rgb once one ships, until then
#              started from builtin:photo's weights (inflate_to_colour: at step 0 it is the gray prior on
#              the channel mean, chroma left noisy; on a 2-core CPU, 6 minutes (358 steps of 8 64² crops)
#              from it reached 23.05 dB on astronaut at σ = 25, a random start 22.88 in 354 steps: a small
#              head start, and far too little training to judge a colour prior).
# Then the denoising PSNR on the held-out photos: the shipped prior; the new gray one (colour through the
# opponent transform); the colour prior on the colour photos. BM3D is not installed there; its
# numbers are in the model card, src/kuosan/models/photo/README.md.
#
#   bash scripts/device_photo_finetune.sh [MINUTES=6]
#
# $OUT gets log.txt (machine, the training logs and their last metrics), eval.txt and each model's
# model.safetensors + config.json (6 files; the device tool brings back 8 at most). Afterwards, on the CPU:
# copy $OUT/photo over src/kuosan/models/photo/ if eval.txt shows it better; copy $OUT/photo-rgb to
# src/kuosan/models/photo-rgb/ if it beats the gray prior on the colour photos (kuosan then uses it for colour
# images: restore.COLOUR_COMPANIONS); run `python benchmarks/restore.py` (PSNR and CPU seconds beside BM3D)
# and update the model card. To check this script on a CPU: DEVICE=cpu BATCH=4 QUICK=1 OUT=/tmp/x bash ... 0.2
set -euo pipefail
minutes=${1:-6}
out=${OUT:-runs/device}
device=${DEVICE:-cuda}
work=${WORK:-/tmp/photo-device}
batch=${BATCH:-256}
mkdir -p "$out"
rm -rf "$work"
mkdir -p "$work"
export PYTHONPATH=src PYTHONUNBUFFERED=1
py=$(command -v python3 || command -v python)
{ date -u; nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || true; } > "$out/log.txt"

# Batch 256 and 6 loader processes each (16 cores; one core cuts ~3,500 crops/s). Photos are drawn ∝ area
# up to 512² pixels (--area-cap): uncapped, retina (a fundus photo, 61 % of it flat: 9×9 std < 2 of 255) gave
# a third of the shipped prior's crops and 45 % of the colour set's, the five natural colour photos only
# 20 % and 29 %; capped, retina gets 7 % and 13 %.
common=(--warmup 100 --batch "$batch" --workers 6 --minutes "$minutes" --device "$device"
        --area-cap 262144 --no-progress)
train() {   # name, options...
    local name=$1
    shift
    "$py" scripts/train_builtin.py photo "$@" "${common[@]}" --out "$work/run-$name" > "$work/$name.log" 2>&1
}
# The gray run also renders the colour photos with random channel weights and lowers crop contrast (--gray-mix,
# --min-contrast): the prior beats BM3D by 0.5–1.2 dB on its training photos but by 0.1–0.3 on the held-out ones
# (gray; 2026-12-01), so more varied crops, not more steps on the same ones, is what the 17 photos need.
# --chroma-mix: half the colour crops as chroma planes, which the gray prior denoises in colour photos, each
# beside its denoised luminance (--chroma-guide: the guide plane builtin:photo has had since stage 5).
train photo --channels 1 --init builtin:photo --lr 2e-4 --gray-mix --chroma-mix 0.5 --chroma-guide \
    --guide-lr-mult 20 --min-contrast 0.6 --min-scale 0.35 &
gray=$!
# Once a colour prior ships (models/photo-rgb), each call continues it, as the gray one continues builtin:photo.
if [ -f src/kuosan/models/photo-rgb/config.json ]; then
    train photo-rgb --channels 3 --init builtin:photo-rgb --lr 2e-4 &
else
    train photo-rgb --channels 3 --init builtin:photo --lr 5e-4 &
fi
rgb=$!
status=0
wait $gray || status=1
wait $rgb || status=1

for name in photo photo-rgb; do
    {
        echo "== $name"
        cat "$work/$name.log"
        tail -n 2 "$work/run-$name/metrics.jsonl" 2>/dev/null || true
    } >> "$out/log.txt"
    if "$py" scripts/train_builtin.py export "$work/run-$name" "$work/$name" >> "$out/log.txt" 2>&1; then
        mkdir -p "$out/$name"
        cp "$work/$name/model.safetensors" "$work/$name/config.json" "$out/$name/"
    fi
done

bench=("$py" benchmarks/restore.py --device "$device" --no-bm3d --denoise-only ${QUICK:+--quick})
{
    echo "== shipped builtin:photo";        "${bench[@]}" --model builtin:photo
    echo "== new gray prior";               "${bench[@]}" --model "$out/photo"
    echo "== colour prior";                 "${bench[@]}" --model builtin:photo --colour-model "$out/photo-rgb" \
                                                  --kinds rgb
} > "$out/eval.txt" 2>&1 || status=1
grep -E "^==|^\| (gray|rgb)" "$out/eval.txt"
exit $status
