"""What the browser tests share: watching a page for what went wrong, logging in, and
checks of layout and contrast."""

from __future__ import annotations

import re
from typing import Any

from .conftest import TOKEN

XSS = "<img src=x onerror=alert(1)>"
SERVER_NAME = "MemberSense Sandbox"
#: Chromium logs every error answer to a page's request in the console.
FAILED_LOAD = r"^Failed to load resource: the server responded with a status of"
#: The page's own event stream or waiting long-poll, aborted by the page when it leaves
#: (logout, reload): Chromium reports that as a failed request, which is no failure of the page.
STREAM = re.compile(r"^GET \S+/api/events(\?ticket=|/poll\?)\S+ net::ERR_ABORTED$")


class Watch:
    """What went wrong on a page: failed requests, error answers, console errors, alerts.

    Also keeps every request's method, URL and headers (``requests``), for tests that
    look at what the page sent.
    """

    def __init__(self, page: Any) -> None:
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.console: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[Any] = []
        self.images_loaded = 0
        page.on("request", lambda r: self.requests.append(r))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.method} {r.url} {r.failure}"))
        page.on("response", self._response)
        page.on("console", lambda m: self.console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.console.append(str(e)))
        page.on("dialog", self._dialog)

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.errors.append(f"{response.status} {response.request.method} {response.url}")
        elif response.request.resource_type == "image":
            self.images_loaded += 1

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def api_requests(self, method: str, path: str) -> list[Any]:
        """Requests the page made of *path* (``/api/...``, query string ignored)."""
        return [
            r
            for r in self.requests
            if r.method == method and re.search(rf"//[^/]+{re.escape(path)}(\?|$)", r.url)
        ]

    def assert_clean(
        self,
        *,
        errors: tuple[str, ...] = (),
        console: tuple[str, ...] = (),
        failed: tuple[str, ...] = (),
    ) -> None:
        """Nothing went wrong, but the error answers, console errors and failed requests that
        match one of the given regular expressions (a test that provokes them says which)."""
        failed_here = [
            f
            for f in self.failed
            if not STREAM.match(f) and not any(re.search(p, f) for p in failed)
        ]
        assert failed_here == [], self.failed
        assert [e for e in self.errors if not any(re.search(p, e) for p in errors)] == [], (
            self.errors
        )
        assert [c for c in self.console if not any(re.search(p, c) for p in console)] == [], (
            self.console
        )
        assert self.dialogs == [], self.dialogs


def no_horizontal_overflow(page: Any) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}"


def log_in(page: Any, app_url: str) -> None:
    page.goto(app_url)
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    page.wait_for_selector("#member-list li.member")


def log_in_without_members(page: Any, app_url: str) -> None:
    page.goto(app_url)
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    page.wait_for_selector("#app-view", state="visible")


def live(page: Any, state: str = "live") -> None:
    """Wait until the page's live updates are in *state* (live, polling, ...)."""
    page.wait_for_selector(f"#live[data-state='{state}']")


def open_channel(page: Any, channel_id: str) -> None:
    page.click("#tab-channels")
    page.click(f".channel[data-channel-id='{channel_id}']")
    page.wait_for_selector("#message-list li.message")


CONTRAST = """(selector) => {
  const rgb = (text) => text.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => {
    const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const node = document.querySelector(selector);
  let back = node;
  while (getComputedStyle(back).backgroundColor === "rgba(0, 0, 0, 0)") back = back.parentElement;
  const [a, b] = [lum(rgb(getComputedStyle(node).color)), lum(rgb(getComputedStyle(back).backgroundColor))];
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


def readable(page: Any, selector: str) -> None:
    """WCAG AA: text at least 4.5 times as bright as its background, or the reverse."""
    ratio = page.evaluate(CONTRAST, selector)
    assert ratio >= 4.5, f"{selector} has a contrast of {ratio:.2f}"


def inside_the_viewport(page: Any, selector: str) -> None:
    box = page.locator(selector).first.bounding_box()
    width = page.evaluate("window.innerWidth")
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (selector, box)


def no_broken_images(page: Any) -> None:
    broken = page.evaluate(
        "[...document.images].filter(i => i.getAttribute('src') && i.complete && i.naturalWidth === 0)"
        ".map(i => i.src)"
    )
    assert broken == []
