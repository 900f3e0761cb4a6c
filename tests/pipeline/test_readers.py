from __future__ import annotations

from collections import Counter

import pytest

from embedcurate.pipeline.errors import BadRowPolicy, InputError
from embedcurate.pipeline.sources.readers import iter_delimited


def test_quoted_fields_may_span_lines_and_records_keep_their_first_line(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b'text,label\r\n"two\r\nlines, one field",a\r\n\r\nplain,b\r\n')
    records = list(iter_delimited(path, BadRowPolicy()))
    assert records == [
        (2, {"text": "two\r\nlines, one field", "label": "a"}),
        (5, {"text": "plain", "label": "b"}),
    ]


def test_without_quoting_or_header_fields_are_positional_and_quotes_are_text(tmp_path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text('a\t"half quoted\t3\nb\tok\t4\textra\n')
    records = list(
        iter_delimited(path, BadRowPolicy(), delimiter="\t", header=False, quoting=False)
    )
    assert records[0] == (1, {"0": "a", "1": '"half quoted', "2": "3"})
    assert records[1][1]["3"] == "extra"


def test_an_undecodable_line_is_raised_or_counted_and_later_lines_keep_their_numbers(
    tmp_path,
) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"text,label\nfine,a\nbad \xff,b\nalso fine,c\n")
    with pytest.raises(InputError, match=r"t\.csv, line 3: invalid_utf8"):
        list(iter_delimited(path, BadRowPolicy()))
    dropped: Counter[str] = Counter()
    policy = BadRowPolicy("drop", lambda reason: dropped.update([reason]))
    assert [line for line, _ in iter_delimited(path, policy)] == [2, 4]
    assert dropped == {"invalid_utf8": 1}
