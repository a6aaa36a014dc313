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

from cluster.config import StrictModel, from_env, secret

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
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = from_env(
        "SOCIALALIGN_LOG_LEVEL", "INFO", description="DEBUG | INFO | WARNING | ERROR (any case)"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value


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
    keywords: list[str] = Field(
        default_factory=list, description="topics to crawl: '#x#' searches the hashtag x, 'x' the plain keyword x"
    )
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
    cookie_namespace: str = Field(
        "socialalign:cookies", min_length=1,
        description="Redis key prefix of the cookie pool (buckets, cooldowns, bans per cookie id); crawls that "
        "share it share each cookie's rate limit, so keep one for every crawl using the same cookies",
    )
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

    crawl_dir: Path = Field(Path("data/crawl"), description="output_dir of the crawl")
    output_dir: Path = Path("data/dataset")
    steps: list[Literal["clean", "retrieve", "persona", "sft"]] = Field(
        default_factory=lambda: ["clean", "retrieve", "persona", "sft"]
    )
    force: bool = Field(False, description="run the steps even when their outputs are up to date")
    min_history_posts: int = Field(10, ge=1, description="users with fewer usable history posts are dropped")
    exclusion_words: list[str] | None = Field(
        None, description="posts containing any are dropped (None: the built-in ads/lottery/fan-club list)"
    )
    exclude_own_name: bool = Field(True, description="drop history posts that contain the user's own name")
    top_k: int = Field(5, ge=1, description="history posts retrieved per case")
    bm25_k1: float = Field(1.5, gt=0)
    bm25_b: float = Field(0.75, ge=0, le=1)
    history_before_post: bool = Field(True, description="retrieve only history posted before the target post")
    persona: LLMEndpointConfig = Field(default_factory=LLMEndpointConfig)
    persona_posts: int = Field(5, ge=1, description="recent posts shown to the persona model")
    persona_workers: int = Field(1, ge=1, description="Ray actors calling the persona endpoint")
    variants: list[Literal["full", "without_persona", "without_history"]] = Field(
        default_factory=lambda: ["full", "without_persona", "without_history"]
    )
    test_fraction: float = Field(0.2, ge=0, lt=1, description="share of topics held out for test")
    test_topics: list[str] | None = Field(None, description="hold out exactly these topics (test_fraction unused)")
    seed: int = 0


class TrainConfig(StageConfig):
    """Stage 3: fine-tune PAC-LoRA (or the LoRA baseline) with Ray Train + DeepSpeed ZeRO.

    Defaults are the research recipe: lr 2e-5 cosine with 10% warmup, 2 epochs, effective batch 16,
    weight decay 0.01, gradient clipping 1.0, max length 1024. The same run name in the same
    storage resumes from its latest checkpoint."""

    base_model: str = Field(
        "Qwen/Qwen2.5-7B-Instruct", description="local Hugging Face model directory (never downloaded)"
    )
    sft_path: Path = Field(Path("data/dataset/sft"), description="SFT set: <sft_path>/train/*.parquet (build-dataset)")
    output_dir: Path = Field(Path("data/train"), description="the adapter goes to <output_dir>/<run_name>/adapter")
    method: Literal["pac_lora", "lora"] = Field(
        "pac_lora", description="pac_lora, or lora: the peft LoRA baseline with the same rank and target modules"
    )
    prompt_variant: Literal["full", "without_persona", "without_history"] = Field(
        "full", description="train on the SFT rows of this prompt variant"
    )
    adapter: dict[str, object] = Field(
        default_factory=dict,
        description="PACLoraConfig fields (r, alpha, dropout, num_analyze_experts, routing, router_scope, "
        "target_modules, ...); lora uses r, alpha, dropout and target_modules",
    )
    num_workers: int = Field(1, ge=1, description="Ray Train workers (one per GPU on GPU nodes)")
    use_gpu: bool = Field(False, description="one GPU per worker unless resources_per_worker says otherwise")
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description="e.g. {CPU: 8, GPU: 1}; empty: Ray Train's default (1 CPU or 1 GPU)"
    )
    zero_stage: Literal[2, 3] = Field(2, description="DeepSpeed ZeRO stage: 2 or 3")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    learning_rate: float = Field(2e-5, gt=0, description="peak learning rate (AdamW)")
    epochs: float = Field(2, gt=0, description="passes over the training rows (fractions allowed)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    effective_batch_size: int = Field(
        16, ge=1, description="rows per optimizer step over all workers = micro_batch_size x accumulation x workers"
    )
    micro_batch_size: int = Field(1, ge=1, description="rows per forward pass on one worker")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of the steps with linear warmup")
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping")
    max_length: int = Field(
        1024, ge=16, description="tokens per row; longer prompts are skipped and counted, long responses truncated"
    )
    checkpoint_every_steps: int = Field(50, ge=1, description="checkpoint every N optimizer steps (and at the end)")
    keep_checkpoints: int | None = Field(2, ge=1, description="checkpoints kept in storage (None: all)")
    log_every_steps: int = Field(
        10, ge=1, description="log and report metrics to Ray Train every N steps (each report is a barrier)"
    )
    max_failures: int = Field(2, ge=0, description="worker failures Ray Train recovers from (from the last checkpoint)")
    run_name: str | None = Field(
        None, description="Ray Train run name, the key for resuming (default: <method>-<prompt_variant>)"
    )
    storage_path: str | None = Field(
        None, description="where checkpoints go: a shared path or s3://... on a multi-node cluster (default: output_dir)"
    )
    resume: bool = Field(True, description="continue the run's latest checkpoint if there is one; false: refuse")
    seed: int = 42

    @field_validator("micro_batch_size")
    @classmethod
    def _batch_sizes_fit(cls, value: int, info) -> int:  # noqa: ANN001 - pydantic's ValidationInfo
        workers, effective = info.data.get("num_workers"), info.data.get("effective_batch_size")
        if workers and effective and effective % (value * workers):
            raise ValueError(
                f"effective_batch_size {effective} must be a multiple of micro_batch_size x num_workers "
                f"({value} x {workers})"
            )
        return value

    @field_validator("run_name")
    @classmethod
    def _plain_run_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9][\w.\-]*$", value):
            raise ValueError("expected letters, digits, '.', '_' or '-' (it names a directory)")
        return value


class ServeConfig(StageConfig):
    """Stage 4: Ray Serve application for micro and macro prediction and an OpenAI-compatible API.

    Two deployments: `Generator` (the base model, PAC-LoRA adapters multiplexed per replica,
    dynamic batching) and `Api` (the FastAPI ingress). Limits bound what one request may ask for;
    a request beyond one is answered 413 naming the limit.
    """

    base_model: str = Field("Qwen/Qwen2.5-7B-Instruct", description="local Hugging Face model directory")
    adapters: dict[str, str] = Field(default_factory=dict, description="adapter id -> adapter directory")
    base_model_id: str = Field("base", description="model id of the base model alone (the zero-shot baseline)")
    default_model: str | None = Field(
        None, description="model id used when a request names none (default: the first adapter, else the base model)"
    )
    host: str = Field("127.0.0.1", description="HTTP bind address (0.0.0.0 inside a pod)")
    port: int = Field(8000, ge=1, le=65535)
    app_name: str = Field("socialalign", description="Ray Serve application name")
    num_replicas: int = Field(1, ge=1, description="Generator replicas (each holds the base model)")
    api_replicas: int = Field(1, ge=1, description="Api (HTTP ingress) replicas")
    replica_cpus: float = Field(1.0, ge=0, description="logical CPUs per Generator replica")
    replica_gpus: float = Field(0.0, ge=0, description="GPUs per Generator replica")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when the replica sees a GPU")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on GPU, float32 on CPU"
    )
    max_adapters_per_replica: int = Field(4, ge=1, description="adapters kept loaded per replica (LRU)")
    max_batch_size: int = Field(8, ge=1, description="rows per batched generate")
    batch_wait_timeout_s: float = Field(0.05, ge=0, description="wait this long for a batch to fill")
    max_ongoing_requests: int = Field(
        32, ge=1, description="requests in flight per replica (>= max_batch_size: Serve caps batches at it)"
    )
    max_queued_requests: int = Field(128, ge=1, description="requests queued per caller; beyond it: 503")
    max_users_per_request: int = Field(256, ge=1, description="users in one macro request")
    max_samples_per_request: int = Field(16, ge=1, description="samples (n) per prompt")
    max_history_posts: int = Field(20, ge=0, description="history posts per user")
    max_text_chars: int = Field(4000, ge=1, description="characters of any one text field")
    max_prompt_tokens: int = Field(3072, ge=16, description="tokens of one rendered prompt")
    max_new_tokens_limit: int = Field(1024, ge=1, description="largest max_new_tokens a request may ask for")
    max_request_bytes: int = Field(8_000_000, ge=1024, description="largest HTTP request body")
    population_dir: Path | None = Field(
        None, description="macro population Parquet paths must lie under it (None: paths refused)"
    )
    labeler: str = Field(
        "offline", description="sentiment labeler: offline | llm-judge | placeholder-unlabelled | module:factory"
    )
    labeler_options: dict[str, object] = Field(default_factory=dict, description="keyword arguments of the labeler")
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    auth_token: SecretStr | None = secret(
        "SOCIALALIGN_SERVE_TOKEN", description="bearer token required by the HTTP API (default: none)"
    )

    @field_validator("adapters")
    @classmethod
    def _adapter_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for adapter_id in value:
            if not re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", adapter_id):
                raise ValueError(f"adapter id {adapter_id!r}: expected 1-64 of A-Z a-z 0-9 . _ : -")
        return value

    @field_validator("base_model_id")
    @classmethod
    def _base_id(cls, value: str, info) -> str:  # noqa: ANN001 (pydantic ValidationInfo)
        if not re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", value):
            raise ValueError("expected 1-64 of A-Z a-z 0-9 . _ : -")
        if value in (info.data.get("adapters") or {}):
            raise ValueError(f"{value!r} is also an adapter id")
        return value

    @field_validator("default_model")
    @classmethod
    def _known_default(cls, value: str | None, info) -> str | None:  # noqa: ANN001
        served = [info.data.get("base_model_id", "base"), *(info.data.get("adapters") or {})]
        if value is not None and value not in served:
            raise ValueError(f"expected one of the served model ids {served}")
        return value

    @field_validator("max_ongoing_requests")
    @classmethod
    def _room_for_a_batch(cls, value: int, info) -> int:  # noqa: ANN001
        batch = info.data.get("max_batch_size")
        if batch is not None and value < batch:
            raise ValueError(f"expected at least max_batch_size ({batch}): Ray Serve caps a replica's batches at it")
        return value

    @field_validator("decoding")
    @classmethod
    def _within_token_limit(cls, value: DecodingConfig, info) -> DecodingConfig:  # noqa: ANN001
        # decoding is declared after max_new_tokens_limit, so the limit is known here.
        limit = info.data.get("max_new_tokens_limit")
        if limit is not None and value.max_new_tokens > limit:
            raise ValueError(f"max_new_tokens {value.max_new_tokens} is above max_new_tokens_limit ({limit})")
        return value


class PredictConfig(StageConfig):
    """Evaluation, part 1: predictions for a test split, one row per (topic, user, sample)."""

    test_path: Path = Field(Path("data/dataset/sft/test"), description="SFT Parquet rows to predict (build-dataset)")
    variant: Literal["full", "without_persona", "without_history"] = Field("full", description="prompt variant")
    output_path: Path = Path("data/predictions/pac_lora.parquet")
    method: str = Field("pac_lora", description="label of this prediction set in reports")
    endpoint: str | None = Field(None, description="URL of a running serve app; None: predict in-process")
    model: str | None = Field(None, description="with endpoint: the adapter id to ask for (None: the app's default)")
    base_model: str = Field("Qwen/Qwen2.5-7B-Instruct", description="local model directory (in-process)")
    adapter: str | None = Field(None, description="in-process: PAC-LoRA adapter directory; None: base model zero-shot")
    samples_per_user: int = Field(1, ge=1)
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    batch_size: int = Field(8, ge=1, description="rows per generate (in-process) or requests in flight (endpoint)")
    num_workers: int = Field(1, ge=1, description="in-process: Ray actors holding a model each")
    use_gpu: bool = Field(False, description="in-process: one GPU per worker")
    max_rows: int | None = Field(None, ge=1, description="predict only the first N rows (quick checks)")
    max_length: int = Field(1024, ge=16, description="longest prompt in tokens; longer rows are skipped and counted")
    auth_token: SecretStr | None = secret("SOCIALALIGN_SERVE_TOKEN", description="bearer token of the serve app")


class EvaluateConfig(StageConfig):
    """Evaluation, part 2: label, score and report one or more prediction sets."""

    predictions: list[Path] = Field(default_factory=list, description="prediction Parquet files")
    output_dir: Path = Path("data/evaluation")
    labeler: str = Field(
        "offline", description="sentiment labeler, named as in serve: offline | llm-judge (the judge endpoint) | "
        "placeholder-unlabelled | module:factory ('llm' still means llm-judge)",
    )
    judge: LLMEndpointConfig = Field(default_factory=LLMEndpointConfig)

    @field_validator("labeler")
    @classmethod
    def _old_labeler_name(cls, value: str) -> str:
        return "llm-judge" if value == "llm" else value


class DemoConfig(StageConfig):
    """The whole pipeline end to end on the embedded default: simulator, crawl, dataset, a tiny
    pretrained base model, PAC-LoRA training, serving, prediction and the evaluation report."""

    size: Literal["smoke", "small", "medium"] = Field("small", description="smoke (tests) | small | medium")
    out: Path = Field(Path("demo-out"), description="every artifact goes under this directory")
    keep_serving: bool = Field(False, description="leave the endpoint up at the end (Ctrl-C stops it)")
    port: int = Field(0, ge=0, le=65535, description="serving port (0: a free one)")
    persona: LLMEndpointConfig = Field(
        default_factory=LLMEndpointConfig, description="an OpenAI-compatible endpoint for personas (default: offline)"
    )
