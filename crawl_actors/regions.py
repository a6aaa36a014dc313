"""s.weibo.com region filter codes: `region=custom:<province>:<city>`, city 1000 = the whole province.

Weibo's full province/city code table, as weibo-search ships it (data/weibo_regions.json says where
it comes from and under which licence): 34 provinces and regions, 海外 (400, by country) and 其他
(100, no cities: only the whole-province code). The crawler's finest slicing iterates these cities;
the simulator draws its users' and posts' regions from the same table.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

WHOLE_PROVINCE = 1000
DATA_FILE = "weibo_regions.json"


@cache
def _table() -> dict[str, Any]:
    return json.loads(resources.files("crawl_actors").joinpath("data", DATA_FILE).read_text(encoding="utf-8"))


def _load() -> dict[int, tuple[str, dict[int, str]]]:
    provinces: dict[int, tuple[str, dict[int, str]]] = {}
    for item in _table()["provinces"]:
        cities = {int(code): name for code, name in item["cities"].items() if int(code) != WHOLE_PROVINCE}
        provinces[int(item["code"])] = (item["name"], dict(sorted(cities.items())))
    return dict(sorted(provinces.items()))


# province code -> (name, {city code: city name}); the whole-province code is not among the cities.
PROVINCES: dict[int, tuple[str, dict[int, str]]] = _load()


def source() -> str:
    """Where the table comes from, and its licence."""
    table = _table()
    return f"{table['source']} Licence: {table['licence']}"


def province_codes() -> tuple[int, ...]:
    return tuple(PROVINCES)


def province_name(code: int) -> str:
    return PROVINCES[code][0]


def city_codes(province: int) -> tuple[int, ...]:
    """The province's city codes (none for 其他, which Weibo only filters as a whole)."""
    return tuple(PROVINCES[province][1])


def city_name(province: int, city: int) -> str:
    return PROVINCES[province][1][city]
