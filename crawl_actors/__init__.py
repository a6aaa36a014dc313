"""Stage 1: crawl Weibo with Ray actors through rate-limited cookie pools (issue #4)."""
