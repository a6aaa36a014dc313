"""Micro metrics (a predicted post against the real one) and macro metrics (a predicted sentiment
distribution against the real one), as the evaluation reports them.

Micro, on characters (Chinese has no spaces): ROUGE-1/2/L F1, BLEU-4 (uniform weights, brevity
penalty, add-one smoothing of the 2-4-gram precisions so short posts do not all score zero),
length ratio (predicted / real characters), sentiment accuracy and macro-F1.
Macro, over the ordered classes positive, neutral, negative: Jensen-Shannon divergence (natural
log: 0 for identical, ln 2 for disjoint), KL(real || predicted) with additive smoothing, total
variation, and earth mover's distance (classes one step apart). Where either side has no labelled
post there is no distribution, so no macro metric (None); averages over topics leave it out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from serve import SENTIMENTS  # ordered: EMD moves mass along this line

KL_SMOOTHING = 1e-3
MACRO_METRICS = ("js", "kl", "tv", "emd")


def _chars(text: str) -> list[str]:
    return [c for c in text if not c.isspace()]


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: int, predicted: int, real: int) -> float:
    if overlap == 0 or predicted == 0 or real == 0:
        return 0.0
    precision, recall = overlap / predicted, overlap / real
    return 2 * precision * recall / (precision + recall)


def rouge_n(prediction: str, reference: str, n: int) -> float:
    pred, ref = _ngrams(_chars(prediction), n), _ngrams(_chars(reference), n)
    overlap = sum((pred & ref).values())
    return _f1(overlap, sum(pred.values()), sum(ref.values()))


def rouge_l(prediction: str, reference: str) -> float:
    pred, ref = _chars(prediction), _chars(reference)
    if not pred or not ref:
        return 0.0
    previous = [0] * (len(ref) + 1)
    for a in pred:
        current = [0]
        for j, b in enumerate(ref, 1):
            current.append(previous[j - 1] + 1 if a == b else max(previous[j], current[j - 1]))
        previous = current
    return _f1(previous[-1], len(pred), len(ref))


def bleu4(prediction: str, reference: str) -> float:
    pred, ref = _chars(prediction), _chars(reference)
    if not pred or not ref:
        return 0.0
    log_precision = 0.0
    for n in range(1, 5):
        pred_n, ref_n = _ngrams(pred, n), _ngrams(ref, n)
        matches, total = sum((pred_n & ref_n).values()), sum(pred_n.values())
        if n == 1:
            if matches == 0:
                return 0.0
            log_precision += math.log(matches / total) / 4
        else:
            log_precision += math.log((matches + 1) / (total + 1)) / 4
    brevity = 1.0 if len(pred) > len(ref) else math.exp(1 - len(ref) / len(pred))
    return brevity * math.exp(log_precision)


def length_ratio(prediction: str, reference: str) -> float:
    real = len(_chars(reference))
    return len(_chars(prediction)) / real if real else float("nan")


def accuracy(predicted: Sequence[str], real: Sequence[str]) -> float:
    pairs = [(p, r) for p, r in zip(predicted, real, strict=True) if p in SENTIMENTS and r in SENTIMENTS]
    return sum(p == r for p, r in pairs) / len(pairs) if pairs else float("nan")


def macro_f1(predicted: Sequence[str], real: Sequence[str]) -> float:
    """Mean F1 over the classes that occur in either sequence (labelled pairs only)."""
    pairs = [(p, r) for p, r in zip(predicted, real, strict=True) if p in SENTIMENTS and r in SENTIMENTS]
    present = {c for pair in pairs for c in pair}
    if not present:
        return float("nan")
    scores = []
    for c in SENTIMENTS:
        if c not in present:
            continue
        tp = sum(p == c and r == c for p, r in pairs)
        scores.append(_f1(tp, sum(p == c for p, _ in pairs), sum(r == c for _, r in pairs)))
    return sum(scores) / len(scores)


def distribution(labels: Sequence[str]) -> tuple[float, ...] | None:
    """Shares of SENTIMENTS among the labelled items (unlabelled ones are left out); None if none is
    labelled: there is no distribution to compare, and a made-up one would give made-up divergences."""
    counts = Counter(label for label in labels if label in SENTIMENTS)
    total = sum(counts.values())
    if total == 0:
        return None
    return tuple(counts[c] / total for c in SENTIMENTS)


def kl(p: Sequence[float], q: Sequence[float], smoothing: float = 0.0) -> float:
    """KL(p || q); infinite where q gives nothing to what p has (smoothing avoids that)."""
    p, q = _smooth(p, smoothing), _smooth(q, smoothing)
    if any(a > 0 and b <= 0 for a, b in zip(p, q, strict=True)):
        return math.inf
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q, strict=True) if a > 0)


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    # Against the mixture, written as log(2a) - log(a + b): (a + b) / 2 underflows to 0 for the
    # tiniest shares, while a + b >= a > 0 never does.
    def toward_mixture(x: Sequence[float], y: Sequence[float]) -> float:
        return sum(a * (math.log(2 * a) - math.log(a + b)) for a, b in zip(x, y, strict=True) if a > 0)

    return (toward_mixture(p, q) + toward_mixture(q, p)) / 2


def total_variation(p: Sequence[float], q: Sequence[float]) -> float:
    return sum(abs(a - b) for a, b in zip(p, q, strict=True)) / 2


def earth_movers(p: Sequence[float], q: Sequence[float]) -> float:
    """Mass times distance moved between ordered classes: the L1 distance of the two CDFs."""
    moved, gap = 0.0, 0.0
    for a, b in zip(p[:-1], q[:-1], strict=True):
        gap += a - b
        moved += abs(gap)
    return moved


def macro_metrics(real: Sequence[float] | None, predicted: Sequence[float] | None) -> dict[str, float | None]:
    """The divergences of `predicted` from `real`; all None when either is missing (nothing labelled)."""
    if real is None or predicted is None:
        return dict.fromkeys(MACRO_METRICS)
    return {
        "js": js_divergence(real, predicted),
        "kl": kl(real, predicted, KL_SMOOTHING),
        "tv": total_variation(real, predicted),
        "emd": earth_movers(real, predicted),
    }


def micro_metrics(prediction: str, reference: str) -> dict[str, float]:
    return {
        "rouge1": rouge_n(prediction, reference, 1),
        "rouge2": rouge_n(prediction, reference, 2),
        "rougeL": rouge_l(prediction, reference),
        "bleu4": bleu4(prediction, reference),
        "length_ratio": length_ratio(prediction, reference),
    }


def _smooth(values: Sequence[float], smoothing: float) -> list[float]:
    if not smoothing:
        return list(values)
    total = sum(values) + smoothing * len(values)
    return [(v + smoothing) / total for v in values]


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            result[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's on ranks, ties at their mean rank); NaN when either
    side is constant or there are fewer than two pairs."""
    if len(x) != len(y):
        raise ValueError("spearman: sequences of different lengths")
    if len(x) < 2:
        return float("nan")
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")
