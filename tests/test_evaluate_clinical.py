"""Assertion and relation scoring on hand-made cases; every expected figure is worked out here."""

from __future__ import annotations

import pytest

from medner_udf.corpus.maccrobat import Relation
from medner_udf.evaluation.clinical import format_clinical_table, score_assertions, score_relations
from medner_udf.text.types import Span

FEVER = Span(0, 5, "Sign_symptom")
COUGH = Span(10, 15, "Sign_symptom")
RASH = Span(20, 24, "Sign_symptom")
CT = Span(30, 32, "Diagnostic_procedure")
MASS = Span(40, 44, "Sign_symptom")


def test_assertion_on_gold_mentions_per_class() -> None:
    gold = {"d1": [(FEVER, "absent"), (COUGH, "absent"), (RASH, "possible"), (CT, "present")]}
    pred = {"d1": [(FEVER, "absent"), (COUGH, "present"), (RASH, "absent"), (CT, "present")]}
    s = score_assertions(gold, pred)
    # absent: tp 1 (fever), predicted 2 (fever, rash), gold 2 (fever, cough): P 1/2, R 1/2, F1 1/2.
    assert (s.per_class["absent"].tp, s.per_class["absent"].n_pred, s.per_class["absent"].n_gold) == (1, 2, 2)
    assert s.per_class["absent"].f1 == pytest.approx(0.5)
    # possible: nothing predicted: F1 0. present: tp 1 (CT), pred 2, gold 1: P 1/2, R 1, F1 2/3.
    assert s.per_class["possible"].f1 == 0.0
    assert s.per_class["present"].f1 == pytest.approx(2 / 3)
    assert s.macro_f1 == pytest.approx((0.5 + 0.0) / 2)
    # accuracy on gold mentions: 2 of 4.
    assert s.micro.precision == pytest.approx(0.5) and s.micro.recall == pytest.approx(0.5)


def test_assertion_end_to_end_needs_span_label_and_status() -> None:
    gold = {"d1": [(FEVER, "absent"), (COUGH, "present")]}
    # Right status on a wrong span, right span with a wrong label, and a spurious mention.
    pred = {
        "d1": [
            (Span(0, 4, "Sign_symptom"), "absent"),
            (Span(10, 15, "Disease_disorder"), "present"),
            (RASH, "absent"),
        ]
    }
    s = score_assertions(gold, pred)
    assert s.per_class["absent"].tp == 0 and s.per_class["absent"].n_pred == 2
    assert s.per_class["present"].tp == 0 and s.per_class["present"].n_gold == 1
    assert s.micro.tp == 0 and s.micro.n_pred == 3 and s.micro.n_gold == 2


def test_assertion_refuses_unknown_status_and_unknown_document() -> None:
    with pytest.raises(ValueError, match="negated"):
        score_assertions({"d1": [(FEVER, "negated")]}, {"d1": []})
    with pytest.raises(ValueError, match="not in gold"):
        score_assertions({"d1": []}, {"d2": []})


def test_relations_per_type_and_micro_with_direction() -> None:
    gold = {
        "d1": [
            Relation(MASS, CT, "MODIFY"),
            Relation(RASH, FEVER, "MODIFY"),
            Relation(COUGH, FEVER, "BEFORE"),
            Relation(FEVER, COUGH, "CO-OCCURRENCE"),  # not scored
        ]
    }
    pred = {
        "d1": [
            Relation(MASS, CT, "MODIFY"),  # right
            Relation(FEVER, RASH, "MODIFY"),  # reversed: wrong
            Relation(COUGH, FEVER, "AFTER"),  # wrong type
        ]
    }
    s = score_relations(gold, pred, ["MODIFY", "BEFORE", "AFTER"])
    # MODIFY: tp 1, pred 2, gold 2 -> F1 0.5; BEFORE: 0 of 1 -> 0; AFTER: 0 of 0 predicted 1 -> 0.
    assert s.per_class["MODIFY"].f1 == pytest.approx(0.5)
    assert s.per_class["BEFORE"].f1 == 0.0 and s.per_class["BEFORE"].n_gold == 1
    assert s.per_class["AFTER"].n_pred == 1 and s.per_class["AFTER"].n_gold == 0
    # micro: tp 1, pred 3, gold 3 -> P = R = F1 = 1/3; macro over types with gold (MODIFY, BEFORE).
    assert s.micro.f1 == pytest.approx(1 / 3)
    assert s.macro_f1 == pytest.approx(0.25)


def test_relations_end_to_end_needs_both_ends_exact() -> None:
    gold = {"d1": [Relation(MASS, CT, "MODIFY")]}
    pred = {"d1": [Relation(Span(40, 43, "Sign_symptom"), CT, "MODIFY")]}
    assert score_relations(gold, pred, ["MODIFY"]).micro.tp == 0


def test_table_lists_every_class_and_the_macro() -> None:
    s = score_assertions({"d1": [(FEVER, "absent")]}, {"d1": [(FEVER, "absent")]})
    table = format_clinical_table("assertion", s, "accuracy")
    assert [line.split()[0] for line in table.splitlines()[2:5]] == ["present", "absent", "possible"]
    assert "accuracy" in table and "macro F1" in table
