"""Every metric against values computed by hand, the divergences' fixed points, and the labellers."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from serve.evaluate.metrics import (
    accuracy,
    bleu4,
    distribution,
    earth_movers,
    js_divergence,
    kl,
    length_ratio,
    macro_f1,
    macro_metrics,
    rouge_l,
    rouge_n,
    total_variation,
)
from serve.sentiment import OfflineLabeler, load_sample, parse_judgement


def test_rouge_by_hand() -> None:
    assert rouge_n("我爱北京", "我爱上海", 1) == pytest.approx(0.5)  # 2 of 4 characters each way
    assert rouge_n("我爱北京", "我爱上海", 2) == pytest.approx(1 / 3)  # 我爱 of 3 bigrams each way
    assert rouge_l("我爱北京", "我爱上海") == pytest.approx(0.5)
    assert rouge_l("ABCD", "ACBD") == pytest.approx(0.75)  # LCS ABD or ACD: 3 of 4
    assert rouge_n("北京 北京", "北京北京", 1) == pytest.approx(1.0)  # spaces are not characters
    assert rouge_n("", "我爱北京", 1) == 0.0


def test_bleu4_by_hand() -> None:
    assert bleu4("今天天气真好", "今天天气真好") == pytest.approx(1.0)
    # every n-gram matches (p1 = 4/4, smoothed p2..p4 = 1); brevity penalty exp(1 - 7/4)
    assert bleu4("我爱北京", "我爱北京天安门") == pytest.approx(math.exp(-0.75))
    # p1 = 2/4; p2 = (1+1)/(3+1); p3 = (0+1)/(2+1); p4 = (0+1)/(1+1); equal lengths: no penalty
    expected = math.exp((math.log(2 / 4) + math.log(2 / 4) + math.log(1 / 3) + math.log(1 / 2)) / 4)
    assert bleu4("我爱北京", "我爱上海") == pytest.approx(expected)
    assert bleu4("北京", "上海") == 0.0


def test_length_ratio() -> None:
    assert length_ratio("一二三", "一二三四五六") == pytest.approx(0.5)
    assert math.isnan(length_ratio("一", ""))


def test_accuracy_and_macro_f1_by_hand() -> None:
    predicted = ["positive", "positive", "negative", "neutral"]
    real = ["positive", "negative", "negative", "neutral"]
    assert accuracy(predicted, real) == pytest.approx(0.75)
    # positive P 1/2 R 1 -> 2/3; negative P 1 R 1/2 -> 2/3; neutral 1
    assert macro_f1(predicted, real) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert accuracy(["unlabelled", "positive"], ["positive", "positive"]) == 1.0  # unlabelled pairs are left out


def test_distribution_counts_only_labelled_posts() -> None:
    assert distribution(["positive", "positive", "negative", "unlabelled"]) == pytest.approx((2 / 3, 0, 1 / 3))
    assert distribution([]) is None and distribution(["unlabelled"] * 3) is None  # none, not a made-up uniform one
    assert macro_metrics(None, (1, 0, 0)) == macro_metrics((1, 0, 0), None) == dict.fromkeys(("js", "kl", "tv", "emd"))


def test_divergences_by_hand() -> None:
    assert js_divergence((0.2, 0.3, 0.5), (0.2, 0.3, 0.5)) == pytest.approx(0.0)
    assert js_divergence((1, 0, 0), (0, 0, 1)) == pytest.approx(math.log(2))
    assert total_variation((0.5, 0.5, 0), (0, 0.5, 0.5)) == pytest.approx(0.5)
    assert earth_movers((1, 0, 0), (0, 0, 1)) == pytest.approx(2.0)  # all mass moves two classes
    assert earth_movers((1, 0, 0), (0, 1, 0)) == pytest.approx(1.0)
    assert earth_movers((0.5, 0.5, 0), (0, 0.5, 0.5)) == pytest.approx(1.0)
    # KL(p || q) with p = (0.5, 0.5, 0), q = (0.25, 0.25, 0.5): 0.5 ln 2 + 0.5 ln 2 = ln 2
    assert kl((0.5, 0.5, 0), (0.25, 0.25, 0.5)) == pytest.approx(math.log(2))
    smoothed = kl((1, 0, 0), (0, 1, 0), smoothing=1e-3)
    p, q = [(1 + 1e-3) / 1.003, 1e-3 / 1.003, 1e-3 / 1.003], [1e-3 / 1.003, (1 + 1e-3) / 1.003, 1e-3 / 1.003]
    assert smoothed == pytest.approx(sum(a * math.log(a / b) for a, b in zip(p, q, strict=True)))
    assert math.isfinite(macro_metrics((1, 0, 0), (0, 0, 1))["kl"])


distributions = st.lists(st.floats(min_value=0, max_value=1), min_size=3, max_size=3).filter(
    lambda v: sum(v) > 0.01).map(lambda v: tuple(x / sum(v) for x in v))


@given(distributions, distributions)
@example((0.0, 1.0, 0.0), (0.0, 1.0, 5e-324))  # the mixture's share underflows to 0: found by hypothesis
def test_divergence_properties(p, q) -> None:
    js = js_divergence(p, q)
    assert -1e-12 <= js <= math.log(2) + 1e-12
    assert js == pytest.approx(js_divergence(q, p), abs=1e-12)
    assert 0 <= total_variation(p, q) <= 1 + 1e-12
    assert earth_movers(p, q) == pytest.approx(earth_movers(q, p), abs=1e-12)
    assert earth_movers(p, q) >= total_variation(p, q) - 1e-12  # moving mass costs at least one step


@pytest.mark.parametrize(("answer", "label"), [
    ("正面", "positive"), (" 负面。", "negative"), ("Neutral", "neutral"), ("中性！", "neutral"),
    ("我觉得是正面", None), ("正面/负面", None), ("", None),
])
def test_judge_answers_are_parsed_strictly(answer: str, label: str | None) -> None:
    assert parse_judgement(answer) == label


def test_offline_labeller_on_clear_cases_and_the_sample() -> None:
    labeler = OfflineLabeler()
    assert labeler.label(["太好了，支持！期待！", "垃圾，太失望了，气死了", "下午去超市买了点水果。"]) == [
        "positive", "negative", "neutral"]
    rows = load_sample()
    assert len(rows) == 60 and {label for label, _ in rows} == {"positive", "neutral", "negative"}
    predicted = labeler.label([text for _, text in rows])
    assert accuracy(predicted, [label for label, _ in rows]) >= 0.65  # the figure the docstring reports


def test_the_labeller_choice_reprints_the_figures_the_offline_docstring_reports() -> None:
    from serve.evaluate.labeler_choice import compare_on_sample

    scores = {name: (round(s["accuracy"], 2), round(s["macro_f1"], 2)) for name, s in compare_on_sample().items()}
    assert scores == {"snownlp": (0.55, 0.53), "cnsenti": (0.6, 0.6), "offline-cnsenti-snownlp": (0.68, 0.67)}
