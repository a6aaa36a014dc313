"""Presets: one switch that sets several fields of a stage's config at once (`preset: research`).

A stage config that offers presets subclasses `WithPresets` and lists, per preset, the fields it
sets, each with the preset's value and why our default differs from it. Fields given explicitly
(YAML, environment, `key=value`) win over the preset; `--print-config` shows the result. The docs'
table of differences (docs/presets.md) is generated from these lists, so it cannot drift.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_core import to_jsonable_python

from cluster.config import has_dotted, set_dotted
from cluster.stage_config import StageConfig

PRESET_NAMES = ("default", "research")

# Decoding that samples a crowd: each model's own next-token distribution, untruncated. predict's
# defaults (the research's temperature 0.7, top_p 0.9, top_k 20) sharpen and cut it, so posts end
# early with too few judgements in them and predicted crowds come out too neutral (measured:
# docs/evaluation.md#predicting). The quality bench and the demo predict with it; any predict
# config or macro request can ask for it in its `decoding`.
CROWD_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": 0}


@dataclass(frozen=True)
class PresetValue:
    """What a preset sets a field to, and why the default is otherwise."""

    value: Any
    why_default: str


class WithPresets(StageConfig):
    """A stage config with presets: `PRESETS[name]` maps dotted field names to PresetValues."""

    PRESETS: ClassVar[dict[str, dict[str, PresetValue]]] = {}

    preset: Literal["default", "research"] = Field(
        "default", description="research: the research pipeline's behaviour; fields you set still win (docs/presets.md)"
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") not in cls.PRESETS:
            return data
        data = copy.deepcopy(data)
        for dotted, setting in cls.PRESETS[data["preset"]].items():
            if not has_dotted(data, dotted):
                set_dotted(data, dotted, to_jsonable_python(setting.value))
        return data


def preset_rows(model: type[WithPresets], preset: str) -> list[tuple[str, Any, Any, str]]:
    """(field, default, the preset's value, why the default) for every field the preset sets."""
    defaults = model().model_dump(mode="json")
    rows = []
    for dotted, setting in model.PRESETS.get(preset, {}).items():
        default: Any = defaults
        for part in dotted.split("."):
            default = default.get(part) if isinstance(default, dict) else None
        rows.append((dotted, default, to_jsonable_python(setting.value), setting.why_default))
    return rows
