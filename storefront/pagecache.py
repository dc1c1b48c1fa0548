"""A per-process cache of rendered pages that are the same for every visitor except for their CSRF token.

The pack list (`/` without a `/buy` token) is rendered once per process and version, with a placeholder where the
form's CSRF token goes; each response gets the visitor's own token put in its place (`get_token`, which also
sets the visitor's CSRF cookie as rendering `{% csrf_token %}` would). So one visitor's token never reaches
another, and the form still works exactly as before.

Correct by construction rather than by invalidation: the cache key is everything the page shows that can change
while the process runs (the active packs' rows, the gallery's rows, the shop's settings, the year in the
footer), read on every request with two small queries. An operator's change to a pack in the admin, from any
process, changes the key, so the very next request renders afresh. Rendering (the templates, the per-pack image
tables) is what is saved; the reads are a fraction of it.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token

# Random per process, so no text a visitor or an operator can write into the page can collide with it.
CSRF_PLACEHOLDER = f"csrfplaceholder{secrets.token_hex(16)}"


@dataclass(frozen=True)
class _Rendered:
    key: Hashable
    parts: tuple[str, ...]  # the page split at each CSRF token
    content_type: str


class TokenizedPageCache:
    """One rendered page per name, kept while its key stays the same."""

    def __init__(self) -> None:
        self._pages: dict[str, _Rendered] = {}
        self._lock = threading.Lock()

    def respond(
        self,
        request: HttpRequest,
        *,
        name: str,
        key: Hashable,
        render: Callable[[str], HttpResponse],
    ) -> HttpResponse:
        """The page `name` for `key`; `render(csrf_token)` makes it when the cached one is for another key."""
        page = self._pages.get(name)
        if page is None or page.key != key:
            rendered = render(CSRF_PLACEHOLDER)
            if rendered.status_code != 200:
                return rendered  # never cache an error
            page = _Rendered(
                key=key,
                parts=tuple(rendered.content.decode().split(CSRF_PLACEHOLDER)),
                content_type=rendered["Content-Type"],
            )
            with self._lock:
                self._pages[name] = page
        token = get_token(request) if len(page.parts) > 1 else ""
        return HttpResponse(token.join(page.parts), content_type=page.content_type)

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()


pages = TokenizedPageCache()
