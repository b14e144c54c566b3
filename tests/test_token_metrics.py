"""token_metrics: the mirror protocol's token-level figures on hand-made cases, answers worked by hand."""

from __future__ import annotations

import pytest

from medner_udf.corpus.maccrobat import Document
from medner_udf.evaluation.token_metrics import Ratios, bio_metrics, token_metrics
from medner_udf.text.types import Span

# Ten tokens. Gold has three mentions: Sign (0-1), Med (3), Lab (6-7). The prediction gets Sign right,
# writes Med as an I- without a B- (3), adds a spurious Sign (5) and cuts Lab short (6).
GOLD_10 = ["B-Sign", "I-Sign", "O", "B-Med", "O", "O", "B-Lab", "I-Lab", "O", "O"]
PRED_10 = ["B-Sign", "I-Sign", "O", "I-Med", "O", "B-Sign", "B-Lab", "O", "O", "O"]


def test_token_metrics_seqeval_default_reads_a_lone_i_tag_as_a_chunk() -> None:
    m = bio_metrics([GOLD_10], [PRED_10])
    # Predicted chunks: Sign(0-1), Med(3), Sign(5), Lab(6); correct: Sign(0-1), Med(3).
    # P = 2/4, R = 2/3, F1 = 2PR/(P+R) = (2/3)/(7/6) = 4/7.
    assert m.seqeval.precision == pytest.approx(2 / 4)
    assert m.seqeval.recall == pytest.approx(2 / 3)
    assert m.seqeval.f1 == pytest.approx(4 / 7)


def test_token_metrics_seqeval_strict_ignores_a_lone_i_tag() -> None:
    m = bio_metrics([GOLD_10], [PRED_10])
    # IOB2 strict: the lone I-Med opens nothing. Predicted: Sign(0-1), Sign(5), Lab(6); correct: Sign(0-1).
    assert m.seqeval_strict == pytest.approx(Ratios(1 / 3, 1 / 3, 1 / 3))
    assert m.seqeval_strict.f1 < m.seqeval.f1


def test_token_metrics_token_micro_ignores_prefixes_and_o() -> None:
    m = bio_metrics([GOLD_10], [PRED_10])
    # Non-O gold tokens 0,1,3,6,7 (5); non-O predicted 0,1,3,5,6 (5); same type at 0,1,3,6 (4).
    assert m.token_micro == pytest.approx(Ratios(4 / 5, 4 / 5, 4 / 5))
    assert m.n_gold_entity_tokens == 5


def test_token_metrics_weighted_f1_includes_o_weighted_by_support() -> None:
    m = bio_metrics([GOLD_10], [PRED_10])
    # Per gold label (support): O (5): gold 2,4,5,8,9, predicted 2,4,7,8,9 -> P = R = 4/5, F1 0.8;
    # B-Sign (1): predicted at 0 and 5 -> P 1/2, R 1, F1 2/3; I-Sign (1): 1.0; B-Med (1): 0.0;
    # B-Lab (1): 1.0; I-Lab (1): 0.0; I-Med is predicted only (support 0, weight 0).
    expected = (5 * 0.8 + 1 * (2 / 3) + 1.0 + 0.0 + 1.0 + 0.0) / 10
    assert m.token_weighted_f1 == pytest.approx(expected)
    assert expected == pytest.approx(2 / 3)


def test_token_metrics_accuracy_compares_whole_bio_tags() -> None:
    m = bio_metrics([GOLD_10], [PRED_10])
    # Equal at 0,1,2,4,6,8,9; I-Med vs B-Med at 3 counts as wrong.
    assert m.token_accuracy == pytest.approx(7 / 10)
    assert (m.n_sequences, m.n_tokens) == (1, 10)


def test_token_metrics_chunks_do_not_run_across_documents() -> None:
    # A mention that ends one document and one that starts the next are two chunks, not one.
    m = bio_metrics([["O", "B-Med"], ["I-Med", "O"]], [["O", "B-Med"], ["I-Med", "O"]])
    assert m.seqeval == pytest.approx(Ratios(1.0, 1.0, 1.0))
    assert m.seqeval_strict == pytest.approx(
        Ratios(1.0, 1.0, 1.0)
    )  # the lone I-Med opens nothing on either side
    m_merged = bio_metrics([["O", "B-Med"], ["I-Med", "O"]], [["O", "B-Med"], ["O", "O"]])
    # Default mode: gold chunks Med (doc 1) and Med (doc 2, a lone I-); predicted one of them.
    assert m_merged.seqeval == pytest.approx(Ratios(1.0, 0.5, 2 / 3))


def test_token_metrics_on_documents_flattens_nested_gold_longest_first() -> None:
    text = "Severe chest pain since May."  # tokens: Severe chest pain since May .
    doc = Document(
        "d1",
        text,
        (Span(0, 17, "Sign_symptom"), Span(0, 6, "Severity"), Span(24, 27, "Date")),
    )
    pred = {"d1": [Span(0, 6, "Severity"), Span(7, 17, "Sign_symptom"), Span(24, 27, "Date")]}
    m = token_metrics([doc], pred)
    # Gold after flattening: B-Sign I-Sign I-Sign O B-Date O (Severity nested inside is dropped).
    # Predicted: B-Sev B-Sign I-Sign O B-Date O. Chunks: 1 of 3 predicted right, 1 of 2 gold found.
    assert m.seqeval == pytest.approx(Ratios(1 / 3, 1 / 2, 0.4))
    # Types: gold S S S O D O, predicted Sev S S O D O: 3 of 4 on each side.
    assert m.token_micro == pytest.approx(Ratios(0.75, 0.75, 0.75))
    # Whole tags equal at tokens 2,3,4,5.
    assert m.token_accuracy == pytest.approx(4 / 6)
    # B-Sign (1) 0.0; I-Sign (2) P 1, R 1/2 -> 2/3; B-Date (1) 1.0; O (2) 1.0.
    assert m.token_weighted_f1 == pytest.approx((0.0 + 2 * (2 / 3) + 1.0 + 2 * 1.0) / 6)


def test_token_metrics_missing_document_predicts_nothing() -> None:
    doc_a = Document("a", "Aspirin given.", (Span(0, 7, "Medication"),))
    doc_b = Document("b", "Fever.", (Span(0, 5, "Sign_symptom"),))
    m = token_metrics([doc_a, doc_b], {"a": [Span(0, 7, "Medication")]})
    assert m.seqeval == pytest.approx(Ratios(1.0, 0.5, 2 / 3))
    assert m.token_accuracy == pytest.approx(4 / 5)  # Aspirin given . | Fever .: only "Fever" wrong


def test_token_metrics_rejects_predictions_for_unknown_documents() -> None:
    doc = Document("a", "Fever.", (Span(0, 5, "Sign_symptom"),))
    with pytest.raises(ValueError, match="not in docs"):
        token_metrics([doc], {"zzz": [Span(0, 5, "Sign_symptom")]})


def test_token_metrics_rejects_sequences_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="sequence 0: 2 gold tags but 1 predicted"):
        bio_metrics([["O", "B-Med"]], [["O"]])
    with pytest.raises(ValueError, match="1 gold and 2 predicted"):
        bio_metrics([["O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="no tokens"):
        bio_metrics([[]], [[]])


def test_token_metrics_all_outside_scores_zero_entity_figures_and_full_accuracy() -> None:
    m = bio_metrics([["O", "O", "O"]], [["O", "O", "O"]])
    assert m.token_micro == Ratios(0.0, 0.0, 0.0)
    assert m.token_accuracy == 1.0
    assert m.token_weighted_f1 == 1.0


def test_token_metrics_on_a_hand_made_note() -> None:
    text = "A 45-year-old man had chest pain ."
    # Tokens: A | 45 | - | year | - | old | man | had | chest | pain | .
    gold = (Span(2, 13, "Age"), Span(14, 17, "Sex"), Span(22, 32, "Sign_symptom"))
    doc = Document("d", text, gold)
    # Age exact, Sex missed, "pain" alone as a shorter Sign_symptom, and a spurious "had".
    pred = {"d": [Span(2, 13, "Age"), Span(28, 32, "Sign_symptom"), Span(18, 21, "Activity")]}
    out = token_metrics([doc], pred)
    # 3 gold chunks, 3 predicted chunks, 1 correct: P = R = F1 = 1/3.
    assert out.seqeval == Ratios(pytest.approx(1 / 3), pytest.approx(1 / 3), pytest.approx(1 / 3))
    # Entity tokens: gold 45 - year - old | man | chest pain (8); predicted 45 - year - old | had |
    # pain (7); right type on 6 (the Age tokens and "pain"): P 6/7, R 6/8.
    assert out.token_micro.precision == pytest.approx(6 / 7)
    assert out.token_micro.recall == pytest.approx(6 / 8)
    assert out.n_tokens == 11 and out.n_gold_entity_tokens == 8
