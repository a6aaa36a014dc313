"""`python -m serve.evaluate`: the evaluate stage, the same entry point as `socialalign evaluate`."""

from cluster.cli import module_main

module_main("serve.evaluate")
