"""`python -m cluster.demo`: the same entry point as `socialalign demo`."""

from cluster.cli import module_main

module_main("cluster.demo")
