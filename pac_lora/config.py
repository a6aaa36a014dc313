"""PACLoraConfig: the adapter's shape and routing, defaults from the research code."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

CONFIG_FILE = "pac_lora_config.json"
ADAPTER_FORMAT = "socialalign-pac-lora"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

Routing = Literal["sequence", "token"]
GateMode = Literal["both", "avg_a", "avg_b", "avg_both"]
RouterScope = Literal["module", "layer"]

_CHOICES = {
    "routing": ("sequence", "token"),
    "gate_mode": ("both", "avg_a", "avg_b", "avg_both"),
    "router_scope": ("module", "layer"),
}


@dataclass(frozen=True)
class PACLoraConfig:
    """N analyze experts A_i (r x d_in) mixed by a news-side router, M compose experts B_j (d_out x r)
    mixed by a user-side router, on every target linear: y = W0 x + (alpha/r) sum_j gB_j B_j sum_i gA_i A_i x.

    routing: "sequence" pools each router's input over its span once per sequence (our default);
             "token" routes every token on its span-masked input (the research behaviour).
    gate_mode: "both" routes both sides; "avg_a" / "avg_b" / "avg_both" use uniform gates instead
             (the research ablations).
    router_scope: "module" gives every wrapped linear its own router pair (research); "layer" shares
             one pair per decoder layer, read from the layer input (a target outside the decoder
             layers, such as lm_head, keeps a pair of its own).
    """

    num_analyze_experts: int = 3
    num_compose_experts: int = 3
    r: int = 8
    alpha: float = 16
    dropout: float = 0.1
    router_hidden: int = 32
    target_modules: tuple[str, ...] = field(default=DEFAULT_TARGETS)
    routing: Routing = "sequence"
    gate_mode: GateMode = "both"
    router_scope: RouterScope = "module"

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        for name in ("num_analyze_experts", "num_compose_experts", "r", "router_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PACLoraConfig.{name}: expected a positive integer, got {value!r}")
        if not self.alpha > 0:
            raise ValueError(f"PACLoraConfig.alpha: expected a positive number, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"PACLoraConfig.dropout: expected 0 <= dropout < 1, got {self.dropout!r}")
        if not self.target_modules or not all(isinstance(name, str) and name for name in self.target_modules):
            raise ValueError(f"PACLoraConfig.target_modules: expected module names, got {self.target_modules!r}")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"PACLoraConfig.{name}: expected one of {allowed}, got {getattr(self, name)!r}")

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
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PACLoraConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"PACLoraConfig: unknown field(s) {unknown}; known: {sorted(known)}")
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
