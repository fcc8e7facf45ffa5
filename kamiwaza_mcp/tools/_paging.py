"""Pages of list results: a stable order, opaque cursors, and a page cut to the result budget.

A cursor contains the sort key of the last item of the previous page, so the next
page starts after that key. Items created or removed between two calls then
shift no other item between pages, which an offset would do.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..client import InvalidRequestError
from ._common import CHARS_PER_TOKEN

__all__ = ["Page", "decode_cursor", "encode_cursor", "page_text", "paginate"]

T = TypeVar("T")
SortKey = tuple[str, ...]

# Characters kept free for the page's header line and the note of a cut page.
_PAGE_OVERHEAD_CHARS = 600


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a sorted list."""

    items: list[T]
    total: int
    next_cursor: str | None
    cut_to_budget: bool


def encode_cursor(tool: str, key: SortKey) -> str:
    """Return the cursor for the items of `tool` after `key`."""
    raw = json.dumps([tool, *key], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, tool: str) -> SortKey:
    """Return the sort key in `cursor`, or raise InvalidRequestError when `tool` did not issue it."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError):
        decoded = None
    valid = isinstance(decoded, list) and len(decoded) > 1 and all(isinstance(part, str) for part in decoded)
    if not valid or decoded[0] != tool:
        raise InvalidRequestError(
            f"invalid cursor {cursor!r}: it is not a next_cursor that {tool} returned",
            hint="pass next_cursor from the previous page unchanged, or omit cursor for the first page",
        )
    return tuple(decoded[1:])


def paginate(
    items: Sequence[T],
    *,
    tool: str,
    key: Callable[[T], SortKey],
    limit: int,
    cursor: str | None,
    size_of: Callable[[T], int],
    max_tokens: int,
) -> Page[T]:
    """Return the page of `items`, sorted by `key`, that starts after `cursor`.

    The page contains at most `limit` items, and fewer when their estimated size
    would pass `max_tokens`. `size_of` returns an item's size in characters, as
    the larger of its text line and its JSON, since a host passes one or the
    other to the model. A page always contains at least one item when any remain.
    """
    ordered = sorted(items, key=key)
    keys = [key(item) for item in ordered]
    start = 0 if cursor is None else bisect.bisect_right(keys, decode_cursor(cursor, tool))
    chunk = ordered[start : start + limit]

    budget = max_tokens * CHARS_PER_TOKEN - _PAGE_OVERHEAD_CHARS
    used = 0
    kept = 0
    for item in chunk:
        used += size_of(item)
        if kept > 0 and used > budget:
            break
        kept += 1
    cut = kept < len(chunk)
    page = chunk[:kept]

    more = start + len(page) < len(ordered)
    next_cursor = encode_cursor(tool, keys[start + len(page) - 1]) if more and page else None
    return Page(items=page, total=len(ordered), next_cursor=next_cursor, cut_to_budget=cut)


def page_text(page: Page[T], *, noun: str, lines: Sequence[str], max_tokens: int, narrowing: str) -> str:
    """Return the text of a page: a count line, one line per item, and a note when it was cut.

    `lines` contains the items' lines in page order; `narrowing` is the way to
    request less, such as "filter with model".
    """
    header = f"{len(page.items)} of {page.total} {noun}"
    if page.next_cursor is not None:
        header += f"; the next page has cursor {page.next_cursor}"
    text = header + ":\n" + "\n".join(f"- {line}" for line in lines)
    if page.cut_to_budget:
        text += (
            f"\n[Cut to {len(page.items)} {noun} to stay under the server's limit of {max_tokens} tokens "
            f"per result; pass cursor {page.next_cursor} for the next ones, a lower limit, or {narrowing}.]"
        )
    return text
