"""Templates: plain fields, and optional groups that vanish with their surrounding text when a field is empty."""

from __future__ import annotations

import polars as pl
import pytest

from eztag.errors import EztagError
from eztag.templates import check_template, render, render_rows, template_fields

LABEL = "{text}[ ({description})]"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"text": "Audio Video", "description": "Media"}, "Audio Video (Media)"),
        ({"text": "Audio Video", "description": ""}, "Audio Video"),
        ({"text": "Audio Video", "description": None}, "Audio Video"),
        ({"text": "Audio Video", "description": "  "}, "Audio Video"),
        ({"text": "Audio Video"}, "Audio Video"),
    ],
)
def test_optional_group_is_dropped_with_its_text_when_a_field_is_empty(values: dict, expected: str) -> None:
    assert render(LABEL, values) == expected


def test_plain_template_keeps_its_text_and_brackets_can_be_literal() -> None:
    assert render("{text} ({description})", {"text": "Audio Video", "description": None}) == "Audio Video ()"
    assert render("[[{text}]] [{a} and {b}]", {"text": "x", "a": "1", "b": ""}) == "[x] "
    assert render("[{a} and {b}]", {"a": "[1]", "b": "2"}) == "[1] and 2"  # values are never parsed
    assert render("{text}[ ({description})]", {"text": "{description}", "description": "{text}"}) == (
        "{description} ({text})"  # nor filled again, inside a group or out
    )


def test_rows_render_without_empty_parentheses() -> None:
    labels = pl.DataFrame({"label_id": ["a", "b"], "text": ["Audio Video", "Games"], "description": [None, "Fun"]})
    assert render_rows(labels, LABEL) == ["Audio Video", "Games (Fun)"]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{text}[ ({description})", "unbalanced"),
        ("{text}] x", "unbalanced"),
        ("{text}[ (none)]", "must hold a {field}"),
        ("{text}[ ({descripton})]", "unknown template field '{descripton}'"),
    ],
)
def test_bad_groups_are_one_line_errors(template: str, message: str) -> None:
    with pytest.raises(EztagError) as error:
        check_template(template, {"text", "description"}, where="encode.label_template")
    assert message in error.value.message and error.value.field == "encode.label_template"


def test_fields_inside_groups_are_fields() -> None:
    assert template_fields(LABEL) == ["text", "description"]
