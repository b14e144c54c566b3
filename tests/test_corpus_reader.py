"""The brat reader on small hand-made fixtures: one test per quirk listed in NOTES.md."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from medner_udf.corpus.maccrobat import CorpusError, read_corpus, read_document
from medner_udf.text.types import Span

Writer = Callable[[Path, str, str, str | None], Path]

# Fever 0-5, severe 10-16, chest 17-22, pain 23-27, "." 27, newline 28, CT 29-31.
TEXT = "Fever and severe chest pain.\nCT of the chest was normal.\n"


def test_tiny_corpus_fixture_offsets_hit_the_intended_words(tiny_corpus: Path) -> None:
    docs = {d.doc_id: d for d in read_corpus(tiny_corpus)}
    assert sorted(docs) == ["1001", "1002", "1003", "1004"]
    surfaces = {i: [d.text[m.begin : m.end] for m in d.mentions] for i, d in docs.items()}
    assert surfaces == {
        "1001": ["45-year-old", "man", "chest pain", "Aspirin"],
        "1002": ["CT", "mass", "liver"],
        "1003": ["She", "fever"],
        "1004": [],
    }


def test_plain_t_lines(tmp_path: Path, brat_writer: Writer) -> None:
    txt = brat_writer(
        tmp_path, "1", TEXT, "T1\tSign_symptom 0 5\tFever\nT2\tSign_symptom 17 27\tchest pain\n"
    )
    doc = read_document(txt)
    assert doc.mentions == (Span(0, 5, "Sign_symptom"), Span(17, 27, "Sign_symptom"))
    assert doc.n_discontinuous == 0


def test_stray_extra_tab_field_is_kept_in_the_surface(tmp_path: Path, brat_writer: Writer) -> None:
    # As 25661749.ann T145: a fourth tab-separated field after the surface string.
    txt = brat_writer(tmp_path, "1", TEXT, "T1\tSign_symptom 0 5\tFever\tstray\n")
    assert read_document(txt).mentions == (Span(0, 5, "Sign_symptom"),)


def test_discontinuous_span_joins_first_start_to_last_end(tmp_path: Path, brat_writer: Writer) -> None:
    txt = brat_writer(tmp_path, "1", TEXT, "T1\tSign_symptom 10 16;23 27\tsevere pain\n")
    doc = read_document(txt)
    assert doc.mentions == (Span(10, 27, "Sign_symptom"),)
    assert doc.n_discontinuous == 1


def test_whitespace_around_a_span_is_stripped(tmp_path: Path, brat_writer: Writer) -> None:
    txt = brat_writer(tmp_path, "1", TEXT, "T1\tSeverity 9 17\t severe \n")
    doc = read_document(txt)
    assert doc.mentions == (Span(10, 16, "Severity"),)
    assert doc.text[10:16] == "severe"


def test_whitespace_only_mention_is_skipped(tmp_path: Path, brat_writer: Writer) -> None:
    txt = brat_writer(tmp_path, "1", TEXT, "T1\tSeverity 9 10\t \nT2\tSeverity 10 16\tsevere\n")
    assert read_document(txt).mentions == (Span(10, 16, "Severity"),)


def test_unordered_t_ids_are_sorted_by_offset(tmp_path: Path, brat_writer: Writer) -> None:
    ann = "T9\tDiagnostic_procedure 29 31\tCT\nT2\tSign_symptom 17 27\tchest pain\nT10\tSign_symptom 0 5\tFever\n"
    doc = read_document(brat_writer(tmp_path, "1", TEXT, ann))
    assert [m.begin for m in doc.mentions] == [0, 17, 29]


def test_mention_across_a_line_break_is_kept_whole(tmp_path: Path, brat_writer: Writer) -> None:
    doc = read_document(brat_writer(tmp_path, "1", TEXT, "T1\tOther_entity 23 31\tpain.\nCT\n"))
    assert doc.mentions == (Span(23, 31, "Other_entity"),)
    assert "\n" in doc.text[23:31]


def test_nested_and_identical_span_overlaps_are_all_kept(tmp_path: Path, brat_writer: Writer) -> None:
    ann = (
        "T1\tSign_symptom 10 27\tsevere chest pain\n"
        "T2\tBiological_structure 17 22\tchest\n"
        "T3\tSeverity 10 16\tsevere\n"
        "T4\tDetailed_description 10 16\tsevere\n"
    )
    doc = read_document(brat_writer(tmp_path, "1", TEXT, ann))
    assert doc.mentions == (
        Span(10, 16, "Detailed_description"),
        Span(10, 16, "Severity"),
        Span(10, 27, "Sign_symptom"),
        Span(17, 22, "Biological_structure"),
    )


def test_identical_duplicate_t_lines_collapse(tmp_path: Path, brat_writer: Writer) -> None:
    ann = "T1\tSign_symptom 0 5\tFever\nT2\tSign_symptom 0 5\tFever\n"
    assert len(read_document(brat_writer(tmp_path, "1", TEXT, ann)).mentions) == 1


def test_other_annotation_lines_are_ignored_but_counted(tmp_path: Path, brat_writer: Writer) -> None:
    ann = (
        "T1\tSign_symptom 0 5\tFever\n"
        "E1\tSign_symptom:T1\n"
        "T2\tSign_symptom 17 27\tchest pain\n"
        "E2\tSign_symptom:T2\n"
        "R1\tMODIFY Arg1:T1 Arg2:T2\n"
        "A1\tPOLARITY E1 NEG\n"
        "*\tOVERLAP T1 T2\n"
        "#1\tAnnotatorNotes T1\tnote\n"
        "\n"
    )
    doc = read_document(brat_writer(tmp_path, "1", TEXT, ann))
    assert len(doc.mentions) == 2
    assert doc.other_lines == Counter({"E": 2, "R": 1, "A": 1, "*": 1, "#": 1})


@pytest.mark.parametrize(
    "bad_line",
    [
        "T2\tSign_symptom zero five\tSECRETWORD",
        "T2\tSign_symptom 0\tSECRETWORD",
        "T2\tSign_symptom\tSECRETWORD",
        "T2",
        "T2\tSign_symptom 0 5;7\tSECRETWORD",
    ],
)
def test_malformed_t_line_names_file_and_line_not_text(
    tmp_path: Path, brat_writer: Writer, bad_line: str
) -> None:
    secret_text = "SECRETWORD patient history.\n"
    ann = f"T1\tSign_symptom 0 10\tSECRETWORD\n{bad_line}\n"
    txt = brat_writer(tmp_path, "4242", secret_text, ann)
    with pytest.raises(CorpusError) as info:
        read_document(txt)
    message = str(info.value)
    assert "4242.ann line 2" in message
    assert "SECRETWORD" not in message and "patient" not in message


@pytest.mark.parametrize("offsets", ["0 500", "-1 3", "5 5", "7 3"])
def test_offsets_outside_the_text_are_an_error(tmp_path: Path, brat_writer: Writer, offsets: str) -> None:
    txt = brat_writer(tmp_path, "7", TEXT, f"T1\tSign_symptom {offsets}\tx\n")
    with pytest.raises(CorpusError, match=r"7\.ann line 1: span .* outside the text"):
        read_document(txt)


def test_txt_without_ann(tmp_path: Path, brat_writer: Writer) -> None:
    lone = brat_writer(tmp_path, "11", TEXT, None)
    brat_writer(tmp_path, "12", TEXT, "T1\tSign_symptom 0 5\tFever\n")
    with pytest.raises(CorpusError, match=r"11\.txt: no matching \.ann"):
        read_document(lone)
    # The corpus reader only pairs documents that have both files.
    assert [d.doc_id for d in read_corpus(tmp_path)] == ["12"]


def test_crlf_text_keeps_raw_offsets(tmp_path: Path, brat_writer: Writer) -> None:
    text = "Fever.\r\nChest pain.\r\n"
    doc = read_document(brat_writer(tmp_path, "1", text, "T1\tSign_symptom 8 18\tChest pain\n"))
    assert doc.text == text
    assert doc.text[8:18] == "Chest pain"


def test_read_corpus_validates_split_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'validation'"):
        read_corpus(tmp_path, "validation")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_corpus(tmp_path / "nowhere")
    with pytest.raises(CorpusError, match=r"no \.txt/\.ann pairs"):
        read_corpus(tmp_path)
