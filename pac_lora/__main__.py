"""`python -m pac_lora`: inspect PAC-LoRA on a model (trainable-parameter summary). Not a pipeline stage."""

import argparse
import sys

parser = argparse.ArgumentParser(
    prog="python -m pac_lora",
    description="Summarise PAC-LoRA on a local Hugging Face model: trainable router and expert parameters.",
)
parser.add_argument("base_model", nargs="?", help="local Hugging Face model directory")
parser.parse_args()
print("python -m pac_lora: not implemented yet (PAC-LoRA is issue #3 in the project's issue tracker)", file=sys.stderr)
sys.exit(2)
