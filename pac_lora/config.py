"""PACLoraConfig: the adapter's shape and routing, defaults from the research code.

It is also the `adapter:` section of the train stage's config, so a typo there is named with the
field it meant, and saved beside the adapter weights as `pac_lora_config.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

CONFIG_FILE = "pac_lora_config.json"
ADAPTER_FORMAT = "socialalign-pac-lora"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

Routing = Literal["sequence", "token"]
GateMode = Literal["both", "avg_a", "avg_b", "avg_both"]
RouterScope = Literal["module", "layer"]
# How expert gate weights are reported (pac_lora.gates): per target module, averaged over the
# layers, or per wrapped linear of every layer.
GateDetail = Literal["module", "layer"]


class PACLoraConfig(BaseModel):
    """N analyze experts A_i (r x d_in) mixed by a news-side router, M compose experts B_j (d_out x r)
    mixed by a user-side router, on every target linear: y = W0 x + (alpha/r) sum_j gB_j B_j sum_i gA_i A_i x.

    The LoRA baseline takes r, alpha, dropout and target_modules from the same model.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)

    num_analyze_experts: int = Field(3, description="analyze experts A_i, mixed by the news-side router")
    num_compose_experts: int = Field(3, description="compose experts B_j, mixed by the user-side router")
    r: int = Field(8, description="rank of every expert (and of the LoRA baseline)",
                   json_schema_extra={"aka": ["rank"]})  # a misspelt "rank" (rnak) suggests r
    alpha: float = Field(16, description="scaling numerator: the update is scaled by alpha / r")
    dropout: float = Field(0.1, description="dropout on the adapter's input, 0 <= dropout < 1")
    router_hidden: int = Field(32, description="hidden width of each router's two-layer MLP")
    target_modules: tuple[str, ...] = Field(
        DEFAULT_TARGETS, description="names of the linears to wrap, matched against the last part of their path"
    )
    routing: Routing = Field(
        "sequence",
        description="sequence: pool each router's input over its span once per sequence; "
        "token: route every token on its span-masked input (the research behaviour)",
    )
    gate_mode: GateMode = Field(
        "both", description="both routes both sides; avg_a, avg_b, avg_both use uniform gates (research ablations)"
    )
    router_scope: RouterScope = Field(
        "module",
        description="module: a router pair per wrapped linear (research); layer: one pair per decoder layer, "
        "read from the layer input (a target outside the decoder layers keeps a pair of its own)",
    )

    @field_validator("num_analyze_experts", "num_compose_experts", "r", "router_hidden", mode="before")
    @classmethod
    def _positive_integer(cls, value: Any) -> Any:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError("expected a positive integer")
        return value

    @field_validator("alpha")
    @classmethod
    def _positive_alpha(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("expected a positive number")
        return value

    @field_validator("dropout")
    @classmethod
    def _dropout_range(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError("expected 0 <= dropout < 1")
        return value

    @field_validator("target_modules", mode="before")
    @classmethod
    def _module_names(cls, value: Any) -> Any:
        if isinstance(value, str) or not value or not all(isinstance(name, str) and name for name in value):
            raise ValueError("expected module names")
        return value

    @field_validator("routing", "gate_mode", "router_scope", mode="before")
    @classmethod
    def _one_of(cls, value: Any, info: Any) -> Any:
        allowed = get_args(cls.model_fields[info.field_name].annotation)
        if value not in allowed:
            raise ValueError(f"expected one of {allowed}")
        return value

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    @property
    def routes_analyze(self) -> bool:
        return self.gate_mode in ("both", "avg_b")

    @property
    def routes_compose(self) -> bool:
        return self.gate_mode in ("both", "avg_a")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PACLoraConfig:
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"PACLoraConfig: unknown field(s) {unknown}; known: {sorted(cls.model_fields)}")
        return cls(**data)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": ADAPTER_FORMAT, "version": 1, **self.to_dict()}
        path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> PACLoraConfig:
        path = Path(directory) / CONFIG_FILE
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no PAC-LoRA adapter config here") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        if payload.pop("format", None) != ADAPTER_FORMAT:
            raise ValueError(f"{path}: not a {ADAPTER_FORMAT} adapter config")
        payload.pop("version", None)
        return cls.from_dict(payload)

