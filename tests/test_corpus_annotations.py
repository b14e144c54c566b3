"""Events, attributes, relations and OVERLAP sets of brat files: hand-made files with known answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from medner_udf.corpus.maccrobat import (
    Attribute,
    CorpusError,
    Document,
    Relation,
    parse_annotations,
    read_document,
)
from medner_udf.text.types import Span

Writer = Callable[[Path, str, str, str | None], Path]

# No 0-2, fever 3-8, "," 8, possible 10-18, pneumonia 19-28, "." 28, newline 29, CT 30-32, chest 39-44.
TEXT = "No fever, possible pneumonia.\nCT of the chest.\n"
FEVER = Span(3, 8, "Sign_symptom")
PNEUMONIA = Span(19, 28, "Disease_disorder")
CT = Span(30, 32, "Diagnostic_procedure")
CHEST = Span(40, 45, "Biological_structure")
BASE = (
    "T1\tSign_symptom 3 8\tfever\n"
    "E1\tSign_symptom:T1 \n"
    "T2\tDisease_disorder 19 28\tpneumonia\n"
    "E2\tDisease_disorder:T2 \n"
    "T3\tDiagnostic_procedure 30 32\tCT\n"
    "E3\tDiagnostic_procedure:T3 \n"
    "T4\tBiological_structure 40 45\tchest\n"
)


def test_fixture_offsets_hit_the_intended_words() -> None:
    assert [TEXT[s.begin : s.end] for s in (FEVER, PNEUMONIA, CT, CHEST)] == [
        "fever",
        "pneumonia",
        "CT",
        "chest",
    ]


@pytest.mark.parametrize(
    ("polarity", "expected"),
    [
        ("NEG", "absent"),
        ("MAYBE_NEG", "absent"),
        ("UNCERTAIN", "possible"),
        ("MAYBE_POS", "possible"),
        ("POS", "present"),
    ],
)
def test_polarity_maps_to_assertion(polarity: str, expected: str) -> None:
    parsed = parse_annotations(BASE + f"A1\tPOLARITY E1 {polarity}\n", TEXT, "9")
    by_mention = dict(zip(parsed.mentions, parsed.assertions, strict=True))
    assert by_mention == {FEVER: expected, PNEUMONIA: "present", CT: "present", CHEST: "present"}
    assert parsed.attributes == (Attribute(FEVER, "POLARITY", polarity),)


def test_every_mention_gets_an_assertion_and_trend_is_kept_apart() -> None:
    ann = BASE + "A1\tPOLARITY E1 NEG\nA2\tPOLARITY E2 UNCERTAIN\nA3\tTREND E3 INC\n"
    parsed = parse_annotations(ann, TEXT, "9")
    # mentions sorted by offset: fever, pneumonia, CT, chest
    assert parsed.assertions == ("absent", "possible", "present", "present")
    assert Attribute(CT, "TREND", "INC") in parsed.attributes
    assert parsed.events == (FEVER, PNEUMONIA, CT)


def test_relation_arguments_resolve_events_to_triggers_and_keep_direction() -> None:
    ann = BASE + "R1\tMODIFY Arg1:T4 Arg2:E3\t\nR2\tBEFORE Arg1:E2 Arg2:E1\t\n"
    parsed = parse_annotations(ann, TEXT, "9")
    assert parsed.relations == (Relation(PNEUMONIA, FEVER, "BEFORE"), Relation(CHEST, CT, "MODIFY"))


def test_duplicate_relation_lines_collapse() -> None:
    # The same relation written once through the event id and once through its trigger's id.
    ann = BASE + "R1\tMODIFY Arg1:T4 Arg2:E3\nR2\tMODIFY Arg1:T4 Arg2:T3\n"
    assert parse_annotations(ann, TEXT, "9").relations == (Relation(CHEST, CT, "MODIFY"),)


def test_lines_may_refer_to_ids_defined_further_down() -> None:
    ann = "R1\tMODIFY Arg1:T4 Arg2:E3\nA1\tPOLARITY E3 NEG\n" + BASE
    parsed = parse_annotations(ann, TEXT, "9")
    assert parsed.relations == (Relation(CHEST, CT, "MODIFY"),)
    assert parsed.assertions[2] == "absent"


def test_overlap_sets_hold_trigger_spans() -> None:
    parsed = parse_annotations(BASE + "*\tOVERLAP E3 E1 E2\n", TEXT, "9")
    assert parsed.overlaps == ((FEVER, PNEUMONIA, CT),)


def test_discontinuous_trigger_and_stray_tab_still_resolve() -> None:
    ann = (
        "T1\tSign_symptom 0 2;3 8\tNo fever\tstray\n"
        "E1\tSign_symptom:T1\n"
        "T2\tBiological_structure 40 45\tchest\n"
        "R1\tMODIFY Arg1:T2 Arg2:E1\n"
        "A1\tPOLARITY E1 NEG\n"
    )
    parsed = parse_annotations(ann, TEXT, "9")
    joined = Span(0, 8, "Sign_symptom")
    assert parsed.n_discontinuous == 1
    assert parsed.relations == (Relation(CHEST, joined, "MODIFY"),)
    assert dict(zip(parsed.mentions, parsed.assertions, strict=True))[joined] == "absent"


def test_references_to_a_whitespace_only_mention_are_dropped_and_counted() -> None:
    ann = "T1\tSeverity 2 3\t \nT2\tSign_symptom 3 8\tfever\nR1\tMODIFY Arg1:T1 Arg2:T2\n"
    parsed = parse_annotations(ann, TEXT, "9")
    assert parsed.mentions == (FEVER,)
    assert parsed.relations == ()
    assert parsed.n_dropped_references == 1


@pytest.mark.parametrize(
    "bad_line",
    [
        "R9\tMODIFY Arg1:T1 Arg2:T77",  # unknown id
        "R9\tMODIFY Arg1:T1",  # one argument
        "R9\tMODIFY Arg1:T1 Arg3:T2",  # no Arg2
        "A9\tPOLARITY E1 SOMETIMES",  # unknown polarity
        "A9\tPOLARITY",  # no target
        "A9\tPOLARITY E42 NEG",  # unknown event
        "E9\tSign_symptom:T42",  # unknown trigger
        "E9",  # no trigger
        "*\tOVERLAP E1",  # a set of one
    ],
)
def test_malformed_lines_name_file_and_line_not_text(
    tmp_path: Path, brat_writer: Writer, bad_line: str
) -> None:
    secret = "SECRETWORD patient history.\n"
    ann = "T1\tSign_symptom 0 10\tSECRETWORD\nE1\tSign_symptom:T1\nT2\tSign_symptom 11 18\tpatient\n"
    txt = brat_writer(tmp_path, "4243", secret, ann + bad_line + "\n")
    with pytest.raises(CorpusError) as info:
        read_document(txt)
    message = str(info.value)
    assert "4243.ann line 4" in message
    assert "SECRETWORD" not in message and "patient" not in message


def test_read_document_carries_the_clinical_annotations(tmp_path: Path, brat_writer: Writer) -> None:
    ann = BASE + "A1\tPOLARITY E1 NEG\nR1\tMODIFY Arg1:T4 Arg2:E3\n*\tOVERLAP E1 E2\n"
    doc = read_document(brat_writer(tmp_path, "5", TEXT, ann))
    assert doc.assertion_labels == ("absent", "present", "present", "present")
    assert doc.relations == (Relation(CHEST, CT, "MODIFY"),)
    assert doc.overlaps == ((FEVER, PNEUMONIA),)


def test_a_document_built_without_assertions_is_all_present() -> None:
    doc = Document("1", TEXT, (FEVER, CT))
    assert doc.assertion_labels == ("present", "present")
    assert doc.relations == ()


def test_document_refuses_misaligned_or_unknown_assertions() -> None:
    with pytest.raises(ValueError, match="1 assertions for 2 mentions"):
        Document("1", TEXT, (FEVER, CT), assertions=("absent",))
    with pytest.raises(ValueError, match="negated"):
        Document("1", TEXT, (FEVER,), assertions=("negated",))
