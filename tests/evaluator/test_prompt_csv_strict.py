"""CSV prompt files are read strictly: a malformed record refuses the file, naming the line where it starts,
instead of an open quote silently swallowing every line after it."""

import pytest

from evaluator.models import Prompt
from evaluator.parsing.prompts import PromptFileError, parse_prompt_file
from evaluator.services.imports import prompts_import
from tests import factories


@pytest.mark.parametrize(
    ("data", "line", "problem"),
    [
        (
            b'id,prompt\na,fine\nb,"never closed\nc,swallowed\nd,swallowed too\n',
            3,
            "a quoted field opened on this line is never closed (the quote runs to line 5, the end of the file)",
        ),
        (b'id,prompt\na,fine\nb,"last"\nc,"open', 4, "a quoted field is never closed"),
        (b'id,prompt\na,"quoted"then text\nb,fine\n', 2, "malformed CSV (',' expected after '\"')"),
        (b"id,prompt,reference\na,Why?,Because.\nb,Short row\n", 3, "2 value(s) where the header has 3 columns"),
        (b"id,prompt\na,hello,extra\n", 2, "more values than header columns"),
    ],
)
def test_a_malformed_csv_record_is_refused_with_the_line_it_starts_on(data: bytes, line: int, problem: str) -> None:
    with pytest.raises(PromptFileError) as refused:
        parse_prompt_file("p.csv", data)

    assert refused.value.line == line
    assert refused.value.problem.startswith(problem)


def test_quoted_fields_may_span_lines_and_hold_doubled_quotes() -> None:
    data = b'id,prompt,context\r\na,"Two\r\nlines","He said ""hi"""\r\n\r\nb,Plain,\r\n'

    rows = parse_prompt_file("p.csv", data)

    assert [(row.external_id, row.text, row.context) for row in rows] == [
        ("a", "Two\r\nlines", 'He said "hi"'),
        ("b", "Plain", ""),
    ]


@pytest.mark.django_db
def test_a_file_with_an_unterminated_quote_stores_nothing() -> None:
    campaign = factories.campaign()

    with pytest.raises(PromptFileError, match="line 2: a quoted field opened on this line is never closed"):
        prompts_import(campaign=campaign, file_name="p.csv", data=b'id,prompt\na,"open\nb,next\n')

    assert not Prompt.objects.filter(campaign=campaign).exists()
