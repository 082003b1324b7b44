#!/usr/bin/env bash
# Motion-module training, as EasyAnimate v1's scripts/train_t2v.sh: the PixArt DiT stays frozen, `attn_temporal` trains.
#   MODEL_NAME=... DATASET_NAME=... DATASET_META_NAME=... bash scripts/train_t2v.sh [key=value | --name value ...]
# Several machines, DeepSpeed or FSDP: ACCELERATE_ARGS="--config_file accelerate.yaml" (instead of --mixed_precision=bf16).
# The dataset format follows DATASET_META_NAME's extension (.csv webvid, .json v1's JSON list, .jsonl or none an image folder)
# unless DATASET_FORMAT says otherwise. A variable set to nothing means none: DATASET_META_NAME= reads an image folder's
# metadata.jsonl in DATASET_NAME.
set -euo pipefail
MODEL_NAME=${MODEL_NAME-models/Diffusion_Transformer/PixArt-XL-2-512x512}
DATASET_NAME=${DATASET_NAME-datasets/internal_datasets/}
DATASET_META_NAME=${DATASET_META_NAME-datasets/internal_datasets/metadata.json}
DATASET_FORMAT=${DATASET_FORMAT:-auto}
# shellcheck disable=SC2086  # ACCELERATE_ARGS is a list of words
${ACCELERATE:-accelerate} launch ${ACCELERATE_ARGS:---mixed_precision=bf16} -m easyanimate.training \
  --pretrained_model_name_or_path="$MODEL_NAME" \
  --train_data_dir="$DATASET_NAME" \
  --train_data_meta="$DATASET_META_NAME" \
  --train_data_format="$DATASET_FORMAT" \
  --sample_size=512 \
  --sample_stride=2 \
  --sample_n_frames=16 \
  --train_batch_size=2 \
  --gradient_accumulation_steps=1 \
  --dataloader_num_workers=8 \
  --num_train_epochs=100 \
  --max_train_steps=none \
  --checkpointing_steps=500 \
  --validation_prompts="A girl with delicate face is smiling." \
  --validation_steps=100 \
  --learning_rate=2e-05 \
  --lr_scheduler="constant_with_warmup" \
  --lr_warmup_steps=100 \
  --seed=42 \
  --output_dir="output_dir" \
  --gradient_checkpointing \
  --mixed_precision="bf16" \
  --adam_weight_decay=3e-2 \
  --adam_epsilon=1e-10 \
  --max_grad_norm=1 \
  --vae_mini_batch=16 \
  --use_ema \
  --trainable_modules "attn_temporal" \
  "$@"
