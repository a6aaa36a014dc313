"""Stage 1: crawl Weibo with Ray actors through a rate-limited cookie pool, into Parquet tables.

`job` runs a crawl (`socialalign crawl`, `python -m crawl_actors`); `config` is its one config model.
The driver seeds the `frontier`, starts `crawl_actor`s (each a `worker` of many concurrent requests)
that share the `cookies` pool and frontier (`shared`); `tasks` says what each page is fetched from
and yields, `parsers` reads the pages, `output` stages and merges the rows, `export` writes the
research crawler's CSV/JSON. `simulator` is a local Weibo for tests and the demo.
"""
