"""The build-dataset steps, in the order they run: clean -> retrieve -> persona -> sft.

Each step module names its output directory (`OUTPUT`, under `output_dir`), the inputs and settings
whose change makes it run again (`inputs`, `settings`), and `build(config, crawl_dir, out)`, which
writes the output and returns its report.
"""
