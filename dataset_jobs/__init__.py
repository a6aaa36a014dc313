"""build-dataset: Ray Data jobs from the crawl's Parquet tables to the SFT set.

clean (noise patterns, exclusion rules, target posts, users with too few posts) -> retrieve (BM25
top-k history per case) -> persona (OpenAI-compatible endpoint or offline) -> sft (alpaca records
with the prompt parts, split by topic). `socialalign build-dataset --config dataset.yaml`.

The steps live in `dataset_jobs.steps`, one module each, and use the rules here: `cleaning`,
`retrieval` (BM25), `persona` (prompt, client, offline persona) and `persona_cache`; `job.run`
runs them in order and skips the ones that are up to date.
"""

from dataset_jobs.cleaning import DEFAULT_EXCLUSIONS, RULES, clean_text, judge_post
from dataset_jobs.persona import PersonaClient, offline_persona, persona_prompt
from dataset_jobs.retrieval import BM25Index, BM25Retriever, Retriever, tokenize

__all__ = [
    "DEFAULT_EXCLUSIONS",
    "RULES",
    "BM25Index",
    "BM25Retriever",
    "PersonaClient",
    "Retriever",
    "clean_text",
    "judge_post",
    "offline_persona",
    "persona_prompt",
    "tokenize",
]
