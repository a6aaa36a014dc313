"""The configs of serving and of predicting through it: `socialalign serve --help`, `socialalign predict --help`."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from cluster.config import StrictModel, secret
from cluster.presets import PresetValue, WithPresets
from pac_lora import GateDetail
from serve.protocol import RepetitionPenaltyScope, Sampling


class DecodingConfig(StrictModel):
    """Sampling parameters (the research's values), how a generation prompt ends and where generation
    stops. temperature 0 means greedy."""

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    top_k: int = Field(20, ge=0)
    repetition_penalty: float = Field(1.2, gt=0.0)
    repetition_penalty_scope: RepetitionPenaltyScope = Field(
        "output", description="the tokens the repetition penalty counts: output, the tokens generated so far; "
        "prompt_and_output, as Hugging Face and the research apply it, which penalises the words of the user's "
        "history in the prompt and so pushes a prediction away from the user's own words (docs/evaluation.md)",
    )
    max_new_tokens: int = Field(256, ge=1, le=4096)
    strip_prompt_end: bool = Field(
        False, description="right-strip the rendered research prompt, as the research inference does (Qwen: it "
        "ends at 'assistant' without the newline every training row had); the chat route never strips",
    )
    stop_tokens: Literal["model", "eos_and_pad"] = Field(
        "model", description="model: the end tokens of the model's generation config and the tokenizer's eos; "
        "eos_and_pad: the tokenizer's eos and pad tokens, as the research's generate call names them",
    )

    def sampling(self) -> Sampling:
        """What each prompt is decoded with (how a prompt ends and where generation stops are not in it)."""
        return Sampling(**{field.name: getattr(self, field.name) for field in dataclasses.fields(Sampling)})


# What `preset: research` changes in serving and predicting: the research inference's prompt bytes,
# stop tokens and repetition penalty (its sampling values are our defaults already).
RESEARCH_DECODING = {
    "decoding.repetition_penalty_scope": PresetValue(
        "prompt_and_output",
        "the research's generate applies Hugging Face's penalty, over the prompt too; penalising the user's own "
        "history words pushed every model's predicted sentiment away from the user's (docs/evaluation.md)",
    ),
    "decoding.strip_prompt_end": PresetValue(
        True,
        "training put a newline after 'assistant' before every response, so the prompt keeps it; the research "
        "inference right-strips its prompt, and the model then starts with that newline of its own",
    ),
    "decoding.stop_tokens": PresetValue(
        "eos_and_pad",
        "the model's generation config names its own end tokens (for Qwen2.5-Instruct the same two: im_end and "
        "endoftext); the research passes the tokenizer's eos and pad tokens",
    ),
}


class ServeConfig(WithPresets):
    """The Ray Serve application for micro and macro prediction and an OpenAI-compatible API.

    Two deployments: `Generator` (the base model, PAC-LoRA adapters multiplexed per replica,
    dynamic batching) and `Api` (the FastAPI ingress). Limits bound what one request may ask for;
    a request beyond one is answered 413 naming the limit. `preset: research` prompts and stops as
    the research inference does (docs/presets.md); an adapter's routing comes with the adapter.
    """

    PRESETS: ClassVar[dict[str, dict[str, PresetValue]]] = {"research": RESEARCH_DECODING}

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
    api_cpus: float = Field(
        0.5, gt=0, description="logical CPUs per Api replica (above 0, so it stays off a head started with num-cpus 0)"
    )
    replica_cpus: float = Field(1.0, ge=0, description="logical CPUs per Generator replica")
    replica_gpus: float = Field(0.0, ge=0, description="GPUs per Generator replica")
    max_replicas_per_node: int | None = Field(
        None, ge=1, description="at most this many Generator replicas on one node (1: each on its own node); "
        "None: no limit",
    )
    proxy_location: Literal["EveryNode", "HeadOnly"] = Field(
        "EveryNode", description="Serve's HTTP proxies: one on every node (Serve's default), or on the head only "
        "(when the nodes share one machine and so one host:port)",
    )
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
    max_request_bytes: int = Field(
        8_000_000, ge=1024, description="largest HTTP request body, counted as it arrives (chunked too)"
    )
    max_rows_per_request: int = Field(
        1024, ge=1, description="rows (prompt x sample) one request may generate: users x samples_per_user, n"
    )
    max_prompt_chars_per_request: int = Field(
        1_000_000, ge=1, description="characters of all the prompts of one request together"
    )
    fanout_per_request: int = Field(
        8, ge=1, description="Generator calls one request keeps in flight; its other batches wait their turn"
    )
    population_dir: Path | None = Field(
        None, description="a folder holding only the population tables to expose, read-only (None: paths refused)"
    )
    max_population_rows: int = Field(
        1_000_000, ge=1, description="rows a population table may have (read from its Parquet footer first)"
    )
    labeler: str = Field(
        "offline", description="sentiment labeler: offline | llm-judge | placeholder-unlabelled | module:factory"
    )
    labeler_options: dict[str, object] = Field(default_factory=dict, description="keyword arguments of the labeler")
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    auth_token: SecretStr | None = secret(
        "SOCIALALIGN_SERVE_TOKEN",
        description="bearer token the HTTP API requires; serving on a host other than loopback needs one",
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

    @field_validator("auth_token")
    @classmethod
    def _usable_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value().strip()  # a token file's newline is not part of it
        if not token:
            return None
        problem = token_problem(token)
        if problem:
            raise ValueError(problem)
        return SecretStr(token)

    @model_validator(mode="after")
    def _one_request_fits_the_queue(self) -> ServeConfig:
        room = self.max_ongoing_requests + self.max_queued_requests
        if self.fanout_per_request > room:
            raise ValueError(
                f"fanout_per_request ({self.fanout_per_request}) is more than max_ongoing_requests + "
                f"max_queued_requests ({room}): one large request alone would be refused (503) by an idle server"
            )
        return self

    @field_validator("decoding")
    @classmethod
    def _within_token_limit(cls, value: DecodingConfig, info) -> DecodingConfig:  # noqa: ANN001
        # decoding is declared after max_new_tokens_limit, so the limit is known here.
        limit = info.data.get("max_new_tokens_limit")
        if limit is not None and value.max_new_tokens > limit:
            raise ValueError(f"max_new_tokens {value.max_new_tokens} is above max_new_tokens_limit ({limit})")
        return value


PLACEHOLDERS = ("placeholder", "changeme", "change-me", "change_me", "replace-me", "replaceme", "set-your-own",
                "your-token", "your_token", "yourtoken", "example", "dummy", "xxxx")
MIN_TOKEN_CHARS = 12


def token_problem(token: str) -> str | None:
    """Why `token` cannot guard a server (a placeholder, a template, too short), or None."""
    lowered = token.lower()
    if (lowered.startswith("<") and lowered.endswith(">")) or lowered.startswith("${") or "..." in lowered:
        return "is a template placeholder, not a token: set a random string (e.g. `openssl rand -hex 32`)"
    if any(word in lowered for word in PLACEHOLDERS):
        return "is a placeholder, not a token: set a random string (e.g. `openssl rand -hex 32`)"
    if len(token) < MIN_TOKEN_CHARS:
        return f"is shorter than {MIN_TOKEN_CHARS} characters: set a random string (e.g. `openssl rand -hex 32`)"
    if any(char.isspace() or not char.isprintable() for char in token):
        return "holds whitespace or control characters, which a bearer header cannot carry"
    return None


class PredictConfig(WithPresets):
    """Evaluation, part 1: predictions for a test split, one row per (topic, user, sample).

    `preset: research` prompts, stops and keeps rows as the research inference does (in-process;
    through an endpoint the serve app's own config decides the prompt and stop tokens)."""

    PRESETS: ClassVar[dict[str, dict[str, PresetValue]]] = {
        "research": {
            **RESEARCH_DECODING,
            "max_length": PresetValue(
                None,
                "training saw prompts of at most 1024 tokens (longer rows were skipped), so a longer test prompt is "
                "skipped and counted too; the research inference predicts every row, however long",
            ),
        }
    }

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
    max_length: int | None = Field(
        1024, ge=16, description="longest prompt in tokens; longer rows are skipped and counted (None: no limit)"
    )
    return_gates: bool = Field(
        False, description="write each prediction's expert gate weights (the gates column; a PAC-LoRA adapter only)"
    )
    gate_detail: GateDetail = Field(
        "module", description="module: gates per target module, averaged over the layers; layer: per module of "
        "every layer"
    )
    auth_token: SecretStr | None = secret("SOCIALALIGN_SERVE_TOKEN", description="bearer token of the serve app")
