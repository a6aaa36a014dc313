"""s.weibo.com region filter codes: `region=custom:<province>:<city>`, city 1000 = the whole province.

Province codes are Weibo's; the city lists are a short sample per province (codes 1..n), which
is what the crawler's finest slicing level iterates and what the simulator serves.
"""

from __future__ import annotations

WHOLE_PROVINCE = 1000

PROVINCES: dict[int, tuple[str, tuple[str, ...]]] = {
    11: ("北京", ("东城区", "西城区", "朝阳区", "海淀区")),
    12: ("天津", ("和平区", "河西区")),
    13: ("河北", ("石家庄", "唐山", "保定")),
    14: ("山西", ("太原", "大同")),
    15: ("内蒙古", ("呼和浩特", "包头")),
    21: ("辽宁", ("沈阳", "大连")),
    22: ("吉林", ("长春", "吉林")),
    23: ("黑龙江", ("哈尔滨", "齐齐哈尔")),
    31: ("上海", ("黄浦区", "徐汇区", "浦东新区")),
    32: ("江苏", ("南京", "苏州", "无锡")),
    33: ("浙江", ("杭州", "宁波", "温州")),
    34: ("安徽", ("合肥", "芜湖")),
    35: ("福建", ("福州", "厦门")),
    36: ("江西", ("南昌", "九江")),
    37: ("山东", ("济南", "青岛", "烟台")),
    41: ("河南", ("郑州", "洛阳")),
    42: ("湖北", ("武汉", "宜昌")),
    43: ("湖南", ("长沙", "株洲")),
    44: ("广东", ("广州", "深圳", "东莞", "佛山")),
    45: ("广西", ("南宁", "桂林")),
    46: ("海南", ("海口", "三亚")),
    50: ("重庆", ("渝中区", "江北区")),
    51: ("四川", ("成都", "绵阳")),
    52: ("贵州", ("贵阳", "遵义")),
    53: ("云南", ("昆明", "大理")),
    54: ("西藏", ("拉萨",)),
    61: ("陕西", ("西安", "宝鸡")),
    62: ("甘肃", ("兰州",)),
    63: ("青海", ("西宁",)),
    64: ("宁夏", ("银川",)),
    65: ("新疆", ("乌鲁木齐",)),
    71: ("台湾", ("台北",)),
    81: ("香港", ("香港",)),
    82: ("澳门", ("澳门",)),
}


def province_name(code: int) -> str:
    return PROVINCES[code][0]


def city_codes(province: int) -> tuple[int, ...]:
    return tuple(range(1, len(PROVINCES[province][1]) + 1))


def city_name(province: int, city: int) -> str:
    return PROVINCES[province][1][city - 1]
