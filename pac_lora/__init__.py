"""PAC-LoRA on stock transformers + peft: the model side of training and serving (issue #3)."""
