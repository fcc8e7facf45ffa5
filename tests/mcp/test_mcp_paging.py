"""Pages and cursors without a server: the order, the cursor's checks, and the budget cut."""

from __future__ import annotations

import pytest

from kamiwaza_mcp.client import InvalidRequestError
from kamiwaza_mcp.tools._paging import Page, decode_cursor, encode_cursor, page_text, paginate

NAMES = ["delta", "alpha", "charlie", "bravo", "echo"]


def page_of(
    items: list[str], limit: int, cursor: str | None, max_tokens: int = 10_000, size: int = 10
) -> Page[str]:
    return paginate(
        items,
        tool="list_things",
        key=lambda item: (item,),
        limit=limit,
        cursor=cursor,
        size_of=lambda item: size,
        max_tokens=max_tokens,
    )


def test_pages_follow_sorted_order() -> None:
    first = page_of(NAMES, 2, None)
    second = page_of(NAMES, 2, first.next_cursor)
    third = page_of(NAMES, 2, second.next_cursor)

    assert (first.items, second.items, third.items) == (["alpha", "bravo"], ["charlie", "delta"], ["echo"])
    assert {first.total, second.total, third.total} == {5}
    assert third.next_cursor is None


def test_removed_item_shifts_no_other() -> None:
    """The cursor contains the last key, so removing an item of an earlier page skips nothing."""
    first = page_of(NAMES, 2, None)
    remaining = [name for name in NAMES if name != "alpha"]

    second = page_of(remaining, 2, first.next_cursor)

    assert second.items == ["charlie", "delta"]


def test_removed_last_item_still_continues() -> None:
    first = page_of(NAMES, 2, None)
    remaining = [name for name in NAMES if name != "bravo"]

    second = page_of(remaining, 2, first.next_cursor)

    assert second.items == ["charlie", "delta"]


def test_cursor_round_trip() -> None:
    cursor = encode_cursor("list_things", ("b", "x/y"))

    assert decode_cursor(cursor, "list_things") == ("b", "x/y")
    assert "=" not in cursor


@pytest.mark.parametrize("cursor", ["", "%%%", encode_cursor("other_tool", ("a",)), "WyJsaXN0X3RoaW5ncyJd"])
def test_bad_cursor_is_rejected(cursor: str) -> None:
    with pytest.raises(InvalidRequestError, match="it is not a next_cursor that list_things returned"):
        decode_cursor(cursor, "list_things")


def test_budget_cuts_page_but_keeps_one() -> None:
    # 10,000 characters per item against a 1,000-token (4,000-character) budget.
    cut = page_of(NAMES, 5, None, max_tokens=1000, size=10_000)
    # 1,000 characters per item: three fit after the page's reserve of 600 characters.
    three = page_of(NAMES, 5, None, max_tokens=1000, size=1000)

    assert cut.items == ["alpha"]
    assert cut.cut_to_budget is True
    assert cut.next_cursor == encode_cursor("list_things", ("alpha",))
    assert three.items == ["alpha", "bravo", "charlie"]
    assert three.cut_to_budget is True


def test_page_text_notes_the_cut() -> None:
    page = page_of(NAMES, 5, None, max_tokens=1000, size=1000)

    text = page_text(page, noun="things", lines=page.items, max_tokens=1000, narrowing="filter")

    assert text.splitlines() == [
        f"3 of 5 things; the next page has cursor {page.next_cursor}:",
        "- alpha",
        "- bravo",
        "- charlie",
        f"[Cut to 3 things to stay under the server's limit of 1000 tokens per result; pass cursor "
        f"{page.next_cursor} for the next ones, a lower limit, or filter.]",
    ]
