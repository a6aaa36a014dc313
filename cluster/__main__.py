"""`python -m cluster`: the same entry point as `socialalign`."""

from cluster.cli import module_main

module_main("cluster")
