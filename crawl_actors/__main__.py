"""`python -m crawl_actors`: the same entry point as `socialalign crawl`."""

from cluster.cli import module_main

module_main("crawl_actors")
