"""build-dataset: Ray Data jobs from the crawl's Parquet tables to the SFT set.

clean (noise patterns, exclusion rules, target posts, users with too few posts) -> retrieve (BM25
top-k history per case) -> persona (OpenAI-compatible endpoint or offline; per user, or per case
as the research) -> sft (alpaca records with the prompt parts, split by topic).
`socialalign build-dataset --config dataset.yaml`; `preset=research` gives the research's dataset.

The steps live in `dataset_jobs.steps`, one module each, and use the rules here: `cleaning`,
`news` (news text per topic from the config or a topics file), `retrieval` (BM25), `persona`
(requests, client, offline persona) and `persona_cache`; `job.run` runs them in order and skips
the ones that are up to date.
"""

from dataset_jobs.cleaning import DEFAULT_EXCLUSIONS, RULES, Exclusions, Rules, clean_text, judge_post
from dataset_jobs.news import load_news_file
from dataset_jobs.persona import PersonaClient, offline_persona, persona_prompt
from dataset_jobs.retrieval import BM25Index, BM25Retriever, Retriever, tokenize

__all__ = [
    "DEFAULT_EXCLUSIONS",
    "RULES",
    "BM25Index",
    "BM25Retriever",
    "Exclusions",
    "PersonaClient",
    "Retriever",
    "Rules",
    "clean_text",
    "judge_post",
    "load_news_file",
    "offline_persona",
    "persona_prompt",
    "tokenize",
]
