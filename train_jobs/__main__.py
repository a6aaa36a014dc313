"""`python -m train_jobs`: the same entry point as `socialalign train`."""

from cluster.cli import module_main

module_main("train_jobs")
