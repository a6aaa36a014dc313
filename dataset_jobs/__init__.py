"""Stage 2: Ray Data jobs from crawled Parquet to the SFT set (issue #5)."""
