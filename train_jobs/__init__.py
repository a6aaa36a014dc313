"""Stage 3: Ray Train + DeepSpeed fine-tuning of PAC-LoRA and the LoRA baseline (issue #6)."""
