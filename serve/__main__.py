"""`python -m serve`: the same entry point as `socialalign serve`."""

from cluster.cli import module_main

module_main("serve")
