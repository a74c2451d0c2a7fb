"""The `browser` tool: search, open pages, follow their numbered links, find text, scroll.

The model writes one command string (so the "tag" call format works: `<browser>open 2</browser>`;
in the "json" format: {"name": "browser", "arguments": {"command": "open 2"}}):

    search <query>        results from the search backend, numbered
    open <n>              link n of the page (or result n of the last search) on screen
    open <url>            a URL, absolute or relative to the page on screen
    find <text>           the next screen holding <text> on the open page (again: the next match)
    scroll down | up      the next or the previous screen of the open page
    back                  the page before

Pages come back as plain text, links as "[3] Orin Vale", one screen (`page_chars`) at a time.
Every fetch goes through the gateway's egress (POST /v1/fetch on the run's gateway: the run's
`sandbox.url` + `sandbox.token_file`, or `gateway_url` + `token_file` here), which fetches only
hosts on its --egress-hosts list. `insecure_direct=True` fetches without the gateway, for local
debugging only. Failures (a refused host, a timeout, HTTP errors, a page that is not HTML or
text) come back as observations starting with "error:", never as exceptions.

The tool holds the episode's state (open page, screen, last results): ToolEnvironment builds its
tools per episode, with `env.args.tool_args.browser` as the constructor's arguments.
"""
from __future__ import annotations

import base64
import json
import logging
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin

import httpx
from bs4 import BeautifulSoup, NavigableString

from parkrl.tools.base import Tool

log = logging.getLogger("parkrl.tools.browser")

SHOWN_TYPES = ("text/html", "application/xhtml+xml", "text/plain")
_BLOCKS = {"p", "div", "section", "article", "header", "footer", "nav", "main", "aside", "ul", "ol", "li", "table",
           "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "dl", "dt", "dd", "figure", "form", "br",
           "hr"}
_HIDDEN = ("script", "style", "noscript", "template", "head", "svg", "iframe")


class BrowserError(RuntimeError):
    """A fetch or a search that failed; the message is shown to the model after "error: "."""


@dataclass
class Result:
    """One search hit."""

    title: str
    url: str
    snippet: str = ""


@dataclass
class Fetched:
    """A fetched URL: status, content type, body (at most the byte cap), and whether it was cut."""

    url: str
    status: int
    content_type: str
    body: bytes
    truncated: bool = False
    location: str | None = None

    def text(self) -> str:
        m = re.search(r"charset=([\w.-]+)", self.content_type, re.I)
        try:
            return self.body.decode(m.group(1) if m else "utf-8", errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")


class SearchBackend:
    """Where `search` looks. Subclass it and name it in `tool_args.browser.search_backend`
    ("pkg.module.Class", constructed with `search_args`): implement `search(query, k)`, fetching
    with `self.fetch(url)` (the browser sets it: it goes through the run's egress), and raise
    BrowserError with a message for the model when something fails."""

    fetch: Any = None  # Callable[[str], Fetched], set by the browser

    def search(self, query: str, k: int) -> list[Result]:
        raise NotImplementedError


class WikiSearchBackend(SearchBackend):
    """A server with the wiki's search API: GET {url}/search?q=...&k=... -> JSON [{"title", "url",
    "snippet"}] (parkrl.sites.wiki, or your own search server speaking the same JSON)."""

    def __init__(self, url: str = "http://127.0.0.1:8090") -> None:
        self.url = url.rstrip("/")

    def search(self, query: str, k: int) -> list[Result]:
        got = self.fetch(f"{self.url}/search?q={quote(query)}&k={int(k)}")
        if got.status != 200:
            raise BrowserError(f"search at {self.url} answered HTTP {got.status}")
        try:
            hits = json.loads(got.body)
            return [Result(str(h["title"]), urljoin(got.url, str(h["url"])), str(h.get("snippet", ""))) for h in hits]
        except (ValueError, TypeError, KeyError) as e:
            raise BrowserError(f"search at {self.url} did not answer a JSON list of {{title, url, snippet}} "
                               f"({type(e).__name__})") from e


@dataclass
class Page:
    """A page as the model sees it: text lines and the links numbered in it (1-based)."""

    url: str
    title: str
    text: str
    links: list[str] = field(default_factory=list)
    note: str = ""  # e.g. that the page was cut at the byte cap


def html_to_page(url: str, html: str) -> Page:
    """Readable text of an HTML document, each link written "[n] text" (n numbers `links`)."""
    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else url
    for tag in soup.find_all(_HIDDEN):
        tag.decompose()
    links: list[str] = []
    for a in soup.find_all("a"):
        href = (a.get("href") or "").strip()
        label = a.get_text(" ", strip=True)
        if not href or href.startswith(("#", "javascript:", "mailto:")):
            continue
        target = urljoin(url, href)
        if target not in links:
            links.append(target)
        a.replace_with(NavigableString(f"[{links.index(target) + 1}] {label or target}"))
    for tag in soup.find_all(["td", "th"]):
        tag.insert_after(NavigableString(" | "))
    for tag in soup.find_all("li"):
        tag.insert(0, NavigableString("- "))
    for tag in soup.find_all(_BLOCKS):
        tag.insert_before(NavigableString("\n"))
        tag.insert_after(NavigableString("\n"))
    raw = soup.get_text("")
    lines = [re.sub(r"\s+", " ", line).strip().removesuffix(" |") for line in raw.split("\n")]
    return Page(url, title, "\n".join(line for line in lines if line and line != "-"), links)


def _screens(text: str, size: int) -> list[tuple[int, int]]:
    """(start, end) offsets of the screens of `text`: whole lines up to `size` characters each."""
    out, start, pos = [], 0, 0
    for line in text.split("\n"):
        end = pos + len(line)
        while end - start > size:  # the screen is full: cut at the last line break, or inside a long line
            cut = text.rfind("\n", start, start + size + 1)
            cut = cut if cut > start else start + size
            out.append((start, cut))
            start = cut + 1 if cut < len(text) and text[cut] == "\n" else cut
        pos = end + 1
    if start < len(text) or not out:
        out.append((start, len(text)))
    return out


_direct_warned = False
_clients: dict[str, httpx.Client] = {}
_clients_lock = threading.Lock()


def _client(key: str, **kw: Any) -> httpx.Client:
    """One pooled client per gateway (or for direct fetches) in this process (httpx is thread-safe)."""
    with _clients_lock:
        if key not in _clients:
            _clients[key] = httpx.Client(trust_env=False, follow_redirects=False, **kw)
        return _clients[key]


class BrowserTool(Tool):
    """A text web browser for the model (see the module docstring). Arguments (`tool_args.browser`):

    search_url       the wiki-style search server (default http://127.0.0.1:8090: parkrl.sites.wiki)
    search_backend   import path of your own SearchBackend subclass; search_args: its arguments
    gateway_url, token_file   the gateway whose egress fetches (default: the run's sandbox service)
    insecure_direct  fetch without the gateway and its egress list (local debugging only)
    results          search results shown; page_chars: characters per screen
    max_bytes        bytes of a page fetched (the rest is cut, and the page says so)
    timeout_s        deadline of one fetch; max_redirects: redirects followed (each one checked again)
    """

    name = "browser"
    description = ("Browse the web: 'search <query>', 'open <n>' (a numbered link or result), 'open <url>', "
                   "'find <text>', 'scroll down', 'scroll up', 'back'.")
    parameters = {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}

    def __init__(self, search_url: str = "http://127.0.0.1:8090", search_backend: str = "",
                 search_args: dict[str, Any] | None = None, gateway_url: str = "", token_file: str = "",
                 insecure_direct: bool = False, results: int = 5, page_chars: int = 2000, max_bytes: int = 500_000,
                 timeout_s: float = 10.0, max_redirects: int = 3) -> None:
        if results < 1 or page_chars < 100 or max_bytes < 1 or timeout_s <= 0 or max_redirects < 0:
            raise ValueError("browser: results >= 1, page_chars >= 100, max_bytes >= 1, timeout_s > 0 and "
                             "max_redirects >= 0")
        if bool(gateway_url) != bool(token_file):
            raise ValueError("browser: give gateway_url and token_file together (or neither: the run's sandbox "
                             "service's gateway)")
        if search_backend:
            from parkrl.plugins import instantiate, load_subclass

            key = "env.args.tool_args.browser.search_backend"
            self.backend = instantiate(load_subclass(search_backend, SearchBackend, key), dict(search_args or {}),
                                       "env.args.tool_args.browser.search_args")
        else:
            self.backend = WikiSearchBackend(search_url, **(search_args or {}))
        self.backend.fetch = self.fetch
        self.gateway: tuple[str, str] | None = None
        if gateway_url:
            try:
                token = open(token_file).read().strip()
            except OSError as e:
                raise ValueError(f"browser: token_file={token_file!r}: cannot read it ({e.strerror})") from e
            if not token:
                raise ValueError(f"browser: token_file={token_file!r} is empty")
            self.gateway = (gateway_url.rstrip("/"), token)
        self.insecure_direct = insecure_direct
        # through the run's gateway: the run checks before step 1 that it has one (sandbox.url or sandbox.servers)
        self.uses_sandbox = self.gateway is None and not insecure_direct
        if insecure_direct:
            global _direct_warned
            if not _direct_warned:
                _direct_warned = True
                log.warning("!" * 78)
                log.warning("browser: insecure_direct=True: pages are fetched WITHOUT the gateway's egress list; "
                            "any host this process reaches can be fetched. For local debugging only.")
                log.warning("!" * 78)
        self.results, self.page_chars, self.max_bytes = results, page_chars, max_bytes
        self.timeout_s, self.max_redirects = timeout_s, max_redirects
        self.session = f"browser-{uuid.uuid4().hex[:12]}"  # names this episode in the gateway's log
        self.page: Page | None = None
        self.screen = 0
        self.history: list[tuple[Page, int]] = []
        self._find: tuple[str, int] | None = None  # (text, offset of the match shown)

    # ---- fetching
    def _endpoint(self) -> tuple[str, str]:
        if self.gateway is not None:
            return self.gateway
        from parkrl.sandbox.client import SandboxError
        from parkrl.tools.sandboxed import shared_client

        try:
            endpoint = shared_client()[1]
        except SandboxError as e:
            raise BrowserError("no gateway to fetch through: set sandbox.url + sandbox.token_file (or "
                               "sandbox.servers=N), or tool_args.browser.gateway_url + token_file") from e
        return endpoint.url.rstrip("/"), endpoint.token

    def _fetch_once(self, url: str) -> Fetched:
        if self.insecure_direct:
            try:
                with _client("direct").stream("GET", url, timeout=self.timeout_s) as r:
                    chunks, size = [], 0
                    for chunk in r.iter_bytes():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > self.max_bytes:
                            break
                    body = b"".join(chunks)
                    return Fetched(url, r.status_code, r.headers.get("content-type", ""), body[:self.max_bytes],
                                   len(body) > self.max_bytes, r.headers.get("location"))
            except httpx.TimeoutException as e:
                raise BrowserError(f"fetching {url}: no answer within {self.timeout_s:g} s") from e
            except httpx.HTTPError as e:
                raise BrowserError(f"fetching {url}: {type(e).__name__}: {e}") from e
        base, token = self._endpoint()
        try:
            r = _client(base).post(f"{base}/v1/fetch", headers={"Authorization": f"Bearer {token}"},
                                   json={"url": url, "session": self.session, "max_bytes": self.max_bytes,
                                         "timeout_s": self.timeout_s}, timeout=self.timeout_s + 5)
        except httpx.HTTPError as e:
            raise BrowserError(f"fetching {url}: the gateway at {base} does not answer ({type(e).__name__})") from e
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.status_code != 200 or not isinstance(data, dict):
            detail = data.get("detail") if isinstance(data, dict) else None
            if r.status_code == 401:
                detail = f"the gateway at {base} refused the run's token"
            elif r.status_code == 404 and detail is None:
                detail = f"the gateway at {base} has no egress (POST /v1/fetch): is it a parkrl gateway?"
            raise BrowserError(str(detail or f"fetching {url}: the gateway answered HTTP {r.status_code}"))
        return Fetched(url, int(data["status"]), str(data.get("content_type") or ""),
                       base64.b64decode(data.get("body_b64") or ""), bool(data.get("truncated")), data.get("location"))

    def fetch(self, url: str) -> Fetched:
        """GET `url` through the egress, following up to `max_redirects` redirects (each checked
        again by the gateway); raises BrowserError."""
        for _ in range(self.max_redirects + 1):
            got = self._fetch_once(url)
            if got.status not in (301, 302, 303, 307, 308) or not got.location:
                return got
            url = urljoin(url, got.location)
        raise BrowserError(f"fetching {url}: more than {self.max_redirects} redirects")

    # ---- commands
    def __call__(self, command: str) -> str:
        verb, _, arg = str(command).strip().partition(" ")
        verb, arg = verb.lower(), arg.strip()
        try:
            if verb == "search" and arg:
                return self._search(arg)
            if verb in ("open", "click", "go") and arg:
                return self._open(arg)
            if verb == "find" and arg:
                return self._find_text(arg)
            if verb == "scroll":
                return self._scroll(-1 if arg.lower() in ("up", "prev", "previous", "back") else 1)
            if verb == "back":
                return self._back()
        except BrowserError as e:
            return f"error: {e}"
        return ("error: browser commands are 'search <query>', 'open <n>', 'open <url>', 'find <text>', "
                f"'scroll down', 'scroll up' and 'back'; got {str(command)[:100]!r}")

    def _search(self, query: str) -> str:
        try:
            hits = self.backend.search(query, self.results)[: self.results]
        except BrowserError:
            raise
        except Exception as e:  # noqa: BLE001 - a user backend's failure is the model's observation
            raise BrowserError(f"search failed: {type(e).__name__}: {e}") from e
        if not hits:
            return f"No results for {query!r}."
        lines = [f"Search results for {query!r}:"]
        for i, h in enumerate(hits, 1):
            lines.append(f"[{i}] {h.title}" + (f"\n    {h.snippet}" if h.snippet else ""))
        self._show(Page(f"search:{query}", f"Search: {query}", "\n".join(lines), [h.url for h in hits]))
        return "\n".join(lines)

    def _open(self, target: str) -> str:
        target = target.strip("[]") if re.fullmatch(r"\[\d+\]", target) else target
        if target.isdigit():
            links = self.page.links if self.page else []
            n = int(target)
            if not 1 <= n <= len(links):
                where = "no page is open" if self.page is None else f"this page has links [1] to [{len(links)}]"
                raise BrowserError(f"there is no link [{n}]: {where}")
            url = links[n - 1]
        else:
            base = self.page.url if self.page and not self.page.url.startswith("search:") else ""
            url = urljoin(base or self._search_base(), target)
        got = self.fetch(url)
        kind = got.content_type.split(";")[0].strip().lower()
        if got.status >= 400:
            text = html_to_page(got.url, got.text()).text if kind in SHOWN_TYPES[:2] else ""
            return f"error: fetching {got.url}: HTTP {got.status}" + (f"\n{text[:500]}" if text else "")
        if kind not in SHOWN_TYPES:
            return (f"error: {got.url} is {kind or 'of no stated type'} ({len(got.body)} bytes), not a page: the "
                    f"browser shows {', '.join(SHOWN_TYPES)}")
        page = html_to_page(got.url, got.text()) if kind != "text/plain" else Page(got.url, got.url, got.text())
        if got.truncated:
            page.note = f"[page truncated: only its first {self.max_bytes} bytes were fetched]"
        return self._show(page)

    def _search_base(self) -> str:
        return getattr(self.backend, "url", "") + "/"

    def _show(self, page: Page, screen: int = 0) -> str:
        if self.page is not None:
            self.history.append((self.page, self.screen))
        self.page, self.screen, self._find = page, screen, None
        return self._render()

    def _render(self, header: str = "") -> str:
        page = self.page
        screens = _screens(page.text, self.page_chars)
        start, end = screens[self.screen]
        top = f"{page.title} ({page.url})" + (f" [screen {self.screen + 1} of {len(screens)}]" if len(screens) > 1
                                               else "")
        parts = [header, top, page.text[start:end].strip("\n")]
        if self.screen + 1 < len(screens):
            parts.append(f"[{len(screens) - self.screen - 1} more screens: 'scroll down']")
        parts.append(page.note)
        return "\n".join(p for p in parts if p)

    def _scroll(self, step: int) -> str:
        if self.page is None:
            raise BrowserError("no page is open: 'search <query>' or 'open <url>' first")
        n = len(_screens(self.page.text, self.page_chars))
        to = self.screen + step
        if not 0 <= to < n:
            raise BrowserError(f"already at the {'end' if step > 0 else 'top'} of the page (screen "
                               f"{self.screen + 1} of {n})")
        self.screen = to
        return self._render()

    def _back(self) -> str:
        if not self.history:
            raise BrowserError("there is no page before this one")
        self.page, self.screen = self.history.pop()
        self._find = None
        return self._render()

    def _find_text(self, needle: str) -> str:
        if self.page is None:
            raise BrowserError("no page is open: 'search <query>' or 'open <url>' first")
        text = self.page.text.lower()
        hits = [m.start() for m in re.finditer(re.escape(needle.lower()), text)]
        if not hits:
            return f"{needle!r} is not on this page ({self.page.url})."
        after = self._find[1] if self._find and self._find[0] == needle.lower() else -1
        at = next((h for h in hits if h > after), hits[0])  # the next match, wrapping around
        self._find = (needle.lower(), at)
        screens = _screens(self.page.text, self.page_chars)
        self.screen = next((i for i, (_, end) in enumerate(screens) if at < end), len(screens) - 1)
        return self._render(f"[find {needle!r}: match {hits.index(at) + 1} of {len(hits)}]")
