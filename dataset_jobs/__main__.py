"""`python -m dataset_jobs`: the same entry point as `socialalign build-dataset`."""

from cluster.cli import module_main

module_main("dataset_jobs")
