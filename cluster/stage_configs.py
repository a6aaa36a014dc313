"""The config model of each stage, and the pieces they share. Defaults are the research defaults.

A stage's YAML file is its model written out; `socialalign <stage> --print-config` shows the
resolved result. Secrets are fields made by `secret(...)`: they come from environment variables
(Kubernetes Secrets in the manifests) and are never printed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from cluster.config import StrictModel, secret

_RAY_ADDRESS = re.compile(r"^(local|auto|ray://[^\s/]+|https?://[^\s/]+/?|[\w.\-]+:\d+)$")


class RayConfig(StrictModel):
    """Where a stage runs. `local` starts a Ray sized for this machine unless RAY_ADDRESS is set
    (as it is inside `ray job submit` and a KubeRay RayJob), in which case that cluster is joined."""

    address: str = Field(
        "local",
        description="local | auto | ray://HOST:10001 | HOST:PORT (GCS) | http://HOST:8265 (submits the stage as a Ray job)",
    )
    num_cpus: int | None = Field(None, ge=1, description="logical CPUs of a local Ray (default: max(4, cores))")
    num_gpus: int | None = Field(None, ge=0, description="GPUs of a local Ray (default: detected)")
    object_store_memory_mb: int | None = Field(
        2048, ge=78, description="object store of a local Ray, MiB (None: Ray's 30% of RAM)"
    )
    include_dashboard: bool = Field(True, description="start the dashboard with a local Ray (127.0.0.1)")
    dashboard_port: int = Field(8265, ge=1, le=65535, description="dashboard port of a local Ray")
    namespace: str = Field("socialalign", description="Ray namespace for named actors")

    @field_validator("address")
    @classmethod
    def _known_address(cls, value: str) -> str:
        if not _RAY_ADDRESS.match(value.strip()):
            raise ValueError("expected local, auto, ray://HOST:PORT, HOST:PORT or http://HOST:8265")
        return value.strip()


class StageConfig(StrictModel):
    """Fields every stage has."""

    ray: RayConfig = Field(default_factory=RayConfig)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class DecodingConfig(StrictModel):
    """Sampling parameters; the research defaults. temperature 0 means greedy."""

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    top_k: int = Field(20, ge=0)
    repetition_penalty: float = Field(1.2, gt=0.0)
    max_new_tokens: int = Field(256, ge=1, le=4096)


class LLMEndpointConfig(StrictModel):
    """Any OpenAI-compatible endpoint (OpenAI, vLLM, our own `serve`). No base_url: offline fallback."""

    base_url: str | None = Field(None, description="e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1")
    model: str | None = Field(None, description="model name the endpoint serves")
    api_key: SecretStr | None = secret(
        "SOCIALALIGN_LLM_API_KEY", "OPENAI_API_KEY", description="API key of the endpoint"
    )
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)
    concurrency: int = Field(8, ge=1, description="requests in flight per worker")
    requests_per_second: float | None = Field(None, gt=0, description="global request rate cap")


class RateLimit(StrictModel):
    """A token bucket: `rate` requests per second on average, at most `burst` at once."""

    rate: float = Field(gt=0)
    burst: int = Field(1, ge=1)


class WeiboEndpoints(StrictModel):
    """Where each Weibo host is; point them all at the local simulator for demos and tests."""

    search: str = "https://s.weibo.com"
    mobile: str = "https://m.weibo.cn"
    ajax: str = "https://weibo.com"
    ai: str = "https://ai.s.weibo.com"


_WEIBO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}(-\d{1,2})?$")


def _default_rates() -> dict[str, RateLimit]:
    # Community-measured safe paces per cookie (WEIBO.md): ~10 s on s.weibo.com, >= 0.5 s on m.weibo.cn.
    return {
        "search": RateLimit(rate=0.1, burst=1),
        "mobile": RateLimit(rate=2.0, burst=1),
        "ajax": RateLimit(rate=1.0, burst=1),
        "ai": RateLimit(rate=0.2, burst=1),
    }


class CrawlConfig(StageConfig):
    """Stage 1: crawl topics, posts, users and their history from Weibo into Parquet."""

    output_dir: Path = Path("data/crawl")
    keywords: list[str] = Field(default_factory=list, description="topics to crawl: hashtags (#x# or x)")
    user_ids: list[str] = Field(default_factory=list, description="users to crawl directly (profile, timeline)")
    start: str | None = Field(None, description="search range start, YYYY-MM-DD[-H], Beijing time")
    end: str | None = Field(None, description="search range end (exclusive), YYYY-MM-DD[-H], Beijing time")
    sources: list[Literal["search", "ai_search"]] = Field(default_factory=lambda: ["search", "ai_search"])
    cookies: SecretStr | None = secret(
        "SOCIALALIGN_WEIBO_COOKIES", description="Weibo cookies, one per line (or use cookies_file)"
    )
    cookies_file: Path | None = Field(None, description="file with one Weibo cookie per line, # comments")
    redis_url: SecretStr | None = secret(
        "SOCIALALIGN_REDIS_URL", description="Redis for the cookie pool and frontier (default: Ray actor + disk)"
    )
    crawl_id: str | None = Field(None, description="names this crawl's state in Redis (default: from output_dir)")
    endpoints: WeiboEndpoints = Field(default_factory=WeiboEndpoints)
    rates: dict[Literal["search", "mobile", "ajax", "ai"], RateLimit] = Field(
        default_factory=_default_rates, description="per cookie and host: {rate: req/s, burst: n}"
    )
    cooldown_s: float = Field(60.0, gt=0, description="first cooldown of a throttled cookie (doubles each time)")
    cooldown_max_s: float = Field(1800.0, gt=0)
    max_pause_s: float = Field(900.0, gt=0, description="wait this long with no usable cookie, then stop")
    num_actors: int = Field(2, ge=1)
    concurrency_per_actor: int = Field(16, ge=1)
    actor_cpus: float = Field(0.5, gt=0, description="logical CPUs reserved per crawl actor")
    max_posts_per_user: int = Field(200, ge=1)
    max_pages_per_user: int = Field(40, ge=1)
    history_days: int | None = Field(3650, ge=1, description="keep history from the last N days (None: all)")
    fetch_details: bool = True
    fetch_regions: bool = True
    fetch_long_text: bool = True
    max_attempts: int = Field(5, ge=1, description="tries of a page that fails (5xx, bad body, network)")
    request_timeout_s: float = Field(20.0, gt=0)
    lease_s: float = Field(300.0, gt=0, description="a leased task returns to the queue after this long")
    split_at_pages: int = Field(46, ge=2, le=50, description="re-query finer when a search shows this many pages")

    @field_validator("start", "end")
    @classmethod
    def _weibo_time(cls, value: str | None) -> str | None:
        if value is not None and not _WEIBO_TIME.match(value):
            raise ValueError("expected YYYY-MM-DD or YYYY-MM-DD-H")
        return value


class DatasetConfig(StageConfig):
    """Stage 2: clean, retrieve, extract personas and build the SFT set with Ray Data."""

    crawl_dir: Path = Path("data/crawl")
    output_dir: Path = Path("data/dataset")
    steps: list[Literal["clean", "retrieve", "persona", "sft"]] = Field(
        default_factory=lambda: ["clean", "retrieve", "persona", "sft"]
    )
    min_history_posts: int = Field(10, ge=1)
    exclusion_words: list[str] = Field(default_factory=list, description="posts containing any are dropped")
    top_k: int = Field(5, ge=1)
    bm25_k1: float = Field(1.5, gt=0)
    bm25_b: float = Field(0.75, ge=0, le=1)
    persona: LLMEndpointConfig = Field(default_factory=LLMEndpointConfig)
    variants: list[Literal["full", "without_persona", "without_history"]] = Field(
        default_factory=lambda: ["full", "without_persona", "without_history"]
    )
    test_fraction: float = Field(0.2, ge=0, lt=1, description="share of topics held out for test")
    seed: int = 0


class TrainConfig(StageConfig):
    """Stage 3: fine-tune PAC-LoRA (or the LoRA baseline) with Ray Train + DeepSpeed ZeRO."""

    base_model: str = Field("Qwen/Qwen2.5-7B-Instruct", description="local Hugging Face model directory")
    sft_path: Path = Path("data/dataset/sft")
    output_dir: Path = Path("data/train")
    method: Literal["pac_lora", "lora"] = "pac_lora"
    prompt_variant: Literal["full", "without_persona", "without_history"] = "full"
    adapter: dict[str, object] = Field(default_factory=dict, description="PACLoraConfig fields (r, alpha, ...)")
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = Field(default_factory=dict)
    zero_stage: Literal[2, 3] = 2
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    learning_rate: float = Field(2e-5, gt=0)
    epochs: float = Field(2, gt=0)
    effective_batch_size: int = Field(16, ge=1)
    micro_batch_size: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(1024, ge=16)
    checkpoint_every_steps: int = Field(50, ge=1)
    max_failures: int = Field(2, ge=0, description="worker failures Ray Train recovers from")
    seed: int = 42


class ServeConfig(StageConfig):
    """Stage 4: Ray Serve application for micro and macro prediction."""

    base_model: str = Field("Qwen/Qwen2.5-7B-Instruct", description="local Hugging Face model directory")
    adapters: dict[str, str] = Field(default_factory=dict, description="adapter id -> adapter directory")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    num_replicas: int = Field(1, ge=1)
    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.05, ge=0)
    max_ongoing_requests: int = Field(32, ge=1)
    max_queued_requests: int = Field(128, ge=1)
    max_users_per_request: int = Field(256, ge=1)
    max_text_chars: int = Field(4000, ge=1)
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    auth_token: SecretStr | None = secret(
        "SOCIALALIGN_SERVE_TOKEN", description="bearer token required by the HTTP API (default: none)"
    )


class PredictConfig(StageConfig):
    """Evaluation, part 1: predictions for a test split, one row per (topic, user, sample)."""

    test_path: Path = Path("data/dataset/sft/test")
    output_path: Path = Path("data/predictions/pac_lora.parquet")
    method: str = Field("pac_lora", description="label of this prediction set in reports")
    endpoint: str | None = Field(None, description="URL of a running serve app; None: predict in-process")
    base_model: str = Field("Qwen/Qwen2.5-7B-Instruct", description="local model directory (in-process)")
    adapter: str | None = Field(None, description="adapter directory or id; None: base model zero-shot")
    samples_per_user: int = Field(1, ge=1)
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)


class EvaluateConfig(StageConfig):
    """Evaluation, part 2: label, score and report one or more prediction sets."""

    predictions: list[Path] = Field(default_factory=list, description="prediction Parquet files")
    output_dir: Path = Path("data/evaluation")
    labeler: Literal["offline", "llm"] = "offline"
    judge: LLMEndpointConfig = Field(default_factory=LLMEndpointConfig)


class DemoConfig(StageConfig):
    """The whole pipeline end to end on the embedded default."""

    size: Literal["smoke", "small", "medium"] = "small"
    out: Path = Path("demo-out")
    keep_serving: bool = False
