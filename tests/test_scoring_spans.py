"""score_spans / format_table on hand-made cases with hand-computed answers."""

from __future__ import annotations

import json

import pytest

from medner_udf.evaluation.scoring import PRF, Scores, format_table, score_spans
from medner_udf.text.types import Span

AGE = Span(2, 13, "Age")
SEX = Span(14, 17, "Sex")
PAIN = Span(22, 32, "Sign_symptom")


def test_exact_match_is_perfect() -> None:
    s = score_spans({"d": [AGE, SEX, PAIN]}, {"d": [PAIN, AGE, SEX]})
    assert s.strict == PRF(3, 3, 3, 1.0, 1.0, 1.0)
    assert s.relaxed.f1 == 1.0
    assert s.macro_f1 == 1.0


def test_boundary_off_by_one_is_strict_miss_relaxed_hit() -> None:
    s = score_spans({"d": [AGE, PAIN]}, {"d": [AGE, Span(22, 31, "Sign_symptom")]})
    assert (s.strict.tp, s.strict.n_pred, s.strict.n_gold) == (1, 2, 2)
    assert s.strict.f1 == pytest.approx(0.5)
    assert s.relaxed.tp == 2
    assert (s.relaxed.precision, s.relaxed.recall, s.relaxed.f1) == (1.0, 1.0, 1.0)


def test_wrong_label_misses_both_strict_and_relaxed() -> None:
    s = score_spans({"d": [PAIN]}, {"d": [Span(22, 32, "Disease_disorder")]})
    assert s.strict.tp == 0 and s.strict.f1 == 0.0
    assert s.relaxed.tp == 0 and s.relaxed.f1 == 0.0
    assert s.per_type["Disease_disorder"] == PRF(0, 1, 0, 0.0, 0.0, 0.0)
    assert s.per_type["Sign_symptom"] == PRF(0, 0, 1, 0.0, 0.0, 0.0)


def test_duplicate_predictions_count_once() -> None:
    s = score_spans({"d": [AGE, SEX]}, {"d": [AGE, AGE, AGE]})
    assert (s.strict.tp, s.strict.n_pred, s.strict.n_gold) == (1, 1, 2)
    assert s.strict.precision == 1.0
    assert s.strict.recall == 0.5


def test_duplicate_gold_counts_once() -> None:
    s = score_spans({"d": [AGE, AGE]}, {"d": [AGE]})
    assert s.strict == PRF(1, 1, 1, 1.0, 1.0, 1.0)


def test_empty_docs_give_zero_not_nan() -> None:
    s = score_spans({"a": [], "b": []}, {"a": [], "b": []})
    assert s.strict == PRF(0, 0, 0, 0.0, 0.0, 0.0)
    assert s.macro_f1 == 0.0
    assert s.per_type == {}


def test_predictions_on_an_empty_gold_doc_are_false_positives() -> None:
    s = score_spans({"a": [AGE], "b": []}, {"a": [AGE], "b": [SEX]})
    assert (s.strict.tp, s.strict.n_pred, s.strict.n_gold) == (1, 2, 1)
    assert s.strict.precision == 0.5
    # Sex is not in gold, so it does not enter the macro average.
    assert s.macro_f1 == 1.0


def test_doc_missing_from_predictions_counts_as_no_predictions() -> None:
    s = score_spans({"a": [AGE], "b": [SEX, PAIN]}, {"a": [AGE]})
    assert (s.strict.tp, s.strict.n_pred, s.strict.n_gold) == (1, 1, 3)
    assert s.strict.recall == pytest.approx(1 / 3)


def test_doc_in_predictions_but_not_gold_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"not in gold.*'zzz'"):
        score_spans({"a": [AGE]}, {"a": [AGE], "zzz": [SEX]})


def test_same_span_in_two_docs_is_two_mentions() -> None:
    s = score_spans({"a": [AGE], "b": [AGE]}, {"a": [AGE]})
    assert (s.strict.tp, s.strict.n_gold) == (1, 2)


def test_macro_f1_averages_over_gold_types() -> None:
    # Age: 2 gold, 1 found, 1 predicted -> P 1, R .5, F1 2/3. Sex: perfect -> 1. Sign_symptom: missed -> 0.
    gold = {"a": [AGE, SEX, PAIN], "b": [AGE]}
    pred = {"a": [AGE, SEX]}
    s = score_spans(gold, pred)
    assert s.per_type["Age"].f1 == pytest.approx(2 / 3)
    assert s.macro_f1 == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    # Micro differs from macro here: 2 tp of 4 gold and 2 predicted.
    assert s.strict.f1 == pytest.approx(2 * 1.0 * 0.5 / 1.5)


def test_relaxed_counts_gold_found_and_predictions_correct_separately() -> None:
    # One long prediction covers two gold mentions of its type; a second prediction overlaps nothing.
    gold = {"d": [Span(0, 5, "Lab_value"), Span(6, 10, "Lab_value")]}
    pred = {"d": [Span(0, 10, "Lab_value"), Span(20, 25, "Lab_value")]}
    s = score_spans(gold, pred)
    assert s.strict.tp == 0
    assert s.relaxed.tp == 2  # both gold mentions found
    assert s.relaxed.recall == 1.0
    assert s.relaxed.precision == 0.5  # one of the two predictions overlaps gold
    assert s.relaxed.f1 == pytest.approx(2 / 3)


def test_touching_spans_do_not_overlap() -> None:
    s = score_spans({"d": [Span(0, 5, "Age")]}, {"d": [Span(5, 9, "Age")]})
    assert s.relaxed.tp == 0 and s.relaxed.precision == 0.0


def test_non_span_values_are_rejected() -> None:
    with pytest.raises(TypeError, match="expected Span"):
        score_spans({"d": [(0, 5, "Age")]}, {"d": []})  # type: ignore[list-item]


def test_to_dict_is_json_and_ordered_by_support() -> None:
    s = score_spans({"a": [AGE, SEX, Span(40, 45, "Sex")]}, {"a": [AGE]})
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert list(d["per_type"]) == ["Sex", "Age"]
    assert d["strict"] == {"tp": 1, "n_pred": 1, "n_gold": 3, "precision": 1.0, "recall": 1 / 3, "f1": 0.5}


def test_format_table_sorted_by_support_with_summary_lines() -> None:
    s = score_spans({"a": [AGE, SEX, Span(40, 45, "Sex")]}, {"a": [AGE, SEX]})
    lines = format_table(s).splitlines()
    body = [ln.split()[0] for ln in lines[2:4]]
    assert body == ["Sex", "Age"]
    micro = next(ln for ln in lines if ln.startswith("micro (strict)"))
    assert micro.split()[-3:] == ["1.000", "0.667", "0.800"]
    assert any(ln.startswith("macro F1") and ln.split()[-1] == "0.833" for ln in lines)
    assert any(ln.startswith("relaxed") for ln in lines)


def test_errors_put_each_strict_miss_in_one_category() -> None:
    gold = [AGE, SEX, PAIN, Span(40, 50, "Lab_value"), Span(60, 70, "Date"), Span(80, 90, "Medication")]
    pred = [
        AGE,  # correct
        Span(14, 18, "Sex"),  # boundary: overlaps the Sex mention, other end
        Span(22, 32, "Disease_disorder"),  # type: the exact span of a mention of another type
        Span(38, 45, "Dosage"),  # type_and_boundary: overlaps only another type, other bounds
        Span(100, 104, "Age"),  # spurious: overlaps no mention
    ]  # Date and Medication: missed (nothing overlaps them)
    s = score_spans({"d": gold}, {"d": pred})
    assert s.errors == {"boundary": 1, "type": 1, "type_and_boundary": 1, "spurious": 1, "missed": 2}
    assert sum(n for k, n in s.errors.items() if k != "missed") == s.strict.n_pred - s.strict.tp
    assert s.to_dict()["errors"] == s.errors
    assert "errors: boundary 1, type 1, type_and_boundary 1, spurious 1, missed 2" in format_table(s)
    assert s.confusions == {("Disease_disorder", "Sign_symptom"): 1, ("Dosage", "Lab_value"): 1}
    assert s.to_dict()["type_confusions"] == [
        {"predicted": "Disease_disorder", "gold": "Sign_symptom", "count": 1},
        {"predicted": "Dosage", "gold": "Lab_value", "count": 1},
    ]


def test_a_type_confusion_pairs_the_prediction_with_the_gold_mention_it_overlaps_most() -> None:
    gold = [Span(0, 4, "Severity"), Span(5, 20, "Sign_symptom"), Span(30, 40, "Date")]
    pred = [Span(2, 12, "Disease_disorder"), Span(30, 40, "Time"), Span(31, 39, "Time")]
    s = score_spans({"d": gold}, {"d": pred})
    # 7 characters inside Sign_symptom against 2 inside Severity; the two Time predictions hit Date.
    assert s.confusions == {("Disease_disorder", "Sign_symptom"): 1, ("Time", "Date"): 2}
    assert "type confusions (predicted for gold): Time for Date 2, Disease_disorder for Sign_symptom 1" in (
        format_table(s)
    )


def test_a_boundary_error_wins_over_a_type_error_on_the_same_prediction() -> None:
    # A prediction overlapping a same-type mention is a boundary error even when it also has the
    # exact span of a mention of another type (nested gold).
    gold = [Span(0, 10, "History"), Span(0, 5, "Disease_disorder")]
    s = score_spans({"d": gold}, {"d": [Span(0, 10, "Disease_disorder")]})
    assert s.errors == {"boundary": 1, "type": 0, "type_and_boundary": 0, "spurious": 0, "missed": 0}
    assert s.confusions == {}


def test_scores_is_frozen() -> None:
    s = score_spans({"a": [AGE]}, {"a": [AGE]})
    assert isinstance(s, Scores)
    with pytest.raises(AttributeError):
        s.macro_f1 = 0.0  # type: ignore[misc]
