"""A preset sets several fields at once; what the user sets explicitly still wins."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import Field

from cluster.config import ConfigError, StrictModel, load_config
from cluster.presets import PresetValue, WithPresets, preset_rows

NO_ENV: dict[str, str] = {}


class Decoding(StrictModel):
    temperature: float = 0.7
    top_k: int = 20


class Example(WithPresets):
    PRESETS: ClassVar = {
        "research": {
            "learning_rate": PresetValue(5e-6, "ours learns faster"),
            "decoding.top_k": PresetValue(50, "a narrower sample reads better"),
        }
    }

    learning_rate: float = Field(2e-5, gt=0)
    decoding: Decoding = Field(default_factory=Decoding)


def test_the_default_preset_changes_nothing() -> None:
    config = load_config(Example, environ=NO_ENV)
    assert (config.preset, config.learning_rate, config.decoding.top_k) == ("default", 2e-5, 20)


def test_research_sets_every_listed_field() -> None:
    config = load_config(Example, overrides=["preset=research"], environ=NO_ENV)
    assert (config.learning_rate, config.decoding.top_k, config.decoding.temperature) == (5e-6, 50, 0.7)


def test_a_field_set_explicitly_wins_over_the_preset(tmp_path: Path) -> None:
    path = tmp_path / "stage.yaml"
    path.write_text("preset: research\ndecoding:\n  top_k: 7\n", encoding="utf-8")
    config = load_config(Example, path, ["learning_rate=1e-3"], environ=NO_ENV)
    assert (config.learning_rate, config.decoding.top_k) == (1e-3, 7)


def test_an_unknown_preset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"argument 'preset=reserch': preset: expected 'default' or 'research'"):
        load_config(Example, overrides=["preset=reserch"], environ=NO_ENV)


def test_preset_rows_name_default_value_and_why() -> None:
    assert preset_rows(Example, "research") == [
        ("learning_rate", 2e-5, 5e-6, "ours learns faster"),
        ("decoding.top_k", 20, 50, "a narrower sample reads better"),
    ]
