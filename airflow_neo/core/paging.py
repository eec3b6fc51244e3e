"""Reading every page of a paginated list call, for any backend."""

from __future__ import annotations

from collections.abc import Callable


def collect_pages(
    fetch_page: Callable[[str | None], dict],
    items_key: str,
    max_results: int | None = None,
) -> list[dict]:
    """Call ``fetch_page(next_token)`` until no ``NextToken`` is left (or ``max_results`` items)."""
    items: list[dict] = []
    token = None
    while True:
        page = fetch_page(token)
        items.extend(page.get(items_key, []))
        token = page.get("NextToken")
        if not token or (max_results is not None and len(items) >= max_results):
            break
    return items if max_results is None else items[:max_results]
