"""The browser tool (parkrl/tools/browser.py) against the real wiki site and a real gateway whose
egress allows only the wiki and one helper server, all on 127.0.0.1 with ports from port 0. A
second helper server is NOT on the list: the gateway must refuse it, and log the refusal."""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from test_wiki_site import start_wiki, stop

from parkrl.gateway.egress import EgressPolicy, EgressRefused, parse_host
from parkrl.sites.wiki import generate
from parkrl.tools import find_tool_calls, run_tool_call
from parkrl.tools.browser import BrowserTool, SearchBackend, html_to_page

TOKEN = "browser-run-token-0123456789"


class Helper(BaseHTTPRequestHandler):
    """/slow (answers after 3 s), /out (302 to the outside server), anything else: a page."""

    hits: list[str]
    outside = ""

    def do_GET(self) -> None:  # noqa: N802
        self.hits.append(self.path)
        if self.path == "/slow":
            time.sleep(3)
        if self.path == "/out":
            self.send_response(302)
            self.send_header("Location", f"{self.outside}/secret")
            self.end_headers()
            return
        body = b"<html><body><p>outside secret page</p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _serve(hits: list[str], outside: str = "") -> ThreadingHTTPServer:
    handler = type("H", (Helper,), {"hits": hits, "outside": outside})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """(wiki URL, gateway URL, token file, gateway log, outside server URL and hits, helper URL and hits,
    a closed port on the egress list)."""
    tmp = tmp_path_factory.mktemp("browser")
    outside_hits: list[str] = []
    helper_hits: list[str] = []
    outside = _serve(outside_hits)
    outside_url = f"http://127.0.0.1:{outside.server_port}"
    helper = _serve(helper_hits, outside_url)
    wiki, wiki_url = start_wiki(tmp / "wiki.log")
    closed = _free_port()
    (tmp / "tokens.json").write_text(json.dumps({"run-b": TOKEN}))
    (tmp / "token").write_text(TOKEN)
    (tmp / "secret").write_text("gateway-secret-0123456789abcdef")
    log = tmp / "gateway.log"
    egress = f"{wiki_url.removeprefix('http://')},127.0.0.1:{helper.server_port},127.0.0.1:{closed}"
    no_server = f"http://127.0.0.1:{_free_port()}"  # the gateway needs one; this test uses only its egress
    cmd = [sys.executable, "-m", "parkrl.gateway", "--port", "0", "--servers", no_server, "--egress-hosts", egress,
           "--tokens-file",
           str(tmp / "tokens.json"), "--secret-file", str(tmp / "secret"), "--fetch-timeout-s", "5"]
    gateway = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1],
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while not (m := re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert gateway.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        yield {"wiki": wiki_url, "gateway": m.group(1), "token_file": str(tmp / "token"), "log": log,
               "outside": outside_url, "outside_hits": outside_hits,
               "helper": f"http://127.0.0.1:{helper.server_port}", "helper_hits": helper_hits, "closed": closed}
    finally:
        stop(gateway)
        stop(wiki)
        outside.shutdown()
        helper.shutdown()


def browser(net, **kw) -> BrowserTool:
    return BrowserTool(search_url=net["wiki"], gateway_url=net["gateway"], token_file=net["token_file"], **kw)


def _link(obs: str, label: str) -> int:
    """The number of the link labelled `label` in an observation."""
    m = re.search(rf"\[(\d+)\] {re.escape(label)}\b", obs)
    assert m, (label, obs)
    return int(m.group(1))


def test_a_two_hop_question_answered_by_search_open_and_links(net):
    world = generate()
    company = world.of_kind("company")[3]
    founder = world.entities[company.founder]
    town = world.entities[founder.birthplace]
    b = browser(net)
    obs = b(f"search {company.name}")
    assert obs.splitlines()[1] == f"[1] {company.name}" and "[2] " in obs and "[6] " not in obs  # results=5
    obs = b("open 1")
    assert obs.startswith(f"{company.name} - Parkrl Wiki ({net['wiki']}/wiki/{company.slug})")
    assert f"Founded | {company.founded}" in obs
    assert str(founder.born) not in obs                         # the answer is one link further
    obs = b(f"open {_link(obs, founder.name)}")
    assert obs.startswith(f"{founder.name} - Parkrl Wiki") and f"Born | {founder.born}" in obs
    obs = b(f"open [{_link(obs, town.name)}]")
    assert f"Population | {town.population}" in obs and "<" not in obs and "tracking" not in obs  # no HTML, no script
    assert b("back").startswith(f"{founder.name} - Parkrl Wiki")
    assert b("open 99").startswith("error: there is no link [99]: this page has links [1] to [")
    assert b(f"open /go/{town.slug}").startswith(f"{town.name} - Parkrl Wiki")  # a same-host redirect, followed
    assert b("search qwertyuiop") == "No results for 'qwertyuiop'."
    assert b("fly away").startswith("error: browser commands are")


def test_screens_scroll_and_find(net):
    world = generate()
    b = browser(net, page_chars=600)
    first = b(f"open {net['wiki']}/")
    n = int(re.search(r"\[screen 1 of (\d+)\]", first).group(1))
    assert n > 5 and len(first) < 800 and "more screens: 'scroll down'" in first
    assert "[screen 2 of" in b("scroll down") and b("scroll up") == first
    assert b("scroll up").startswith("error: already at the top")
    last = world.of_kind("person")[-1]
    obs = b(f"find {last.name}")
    assert obs.startswith(f"[find {last.name!r}: match 1 of 1]") and last.name in obs
    assert int(re.search(r"\[screen (\d+) of", obs).group(1)) >= n - 1
    obs = b("find Mills")
    hits = int(re.search(r"match 1 of (\d+)", obs).group(1))
    assert hits > 3 and "match 2 of" in b("find Mills") and "match 3 of" in b("find mills")  # case-blind: the next
    assert "match 1 of" in b("find Works")                                                  # another text: the first
    assert b("find zzzqqq").startswith("'zzzqqq' is not on this page")
    assert b(f"open {net['wiki']}/") == first
    for _ in range(n - 1):
        obs = b("scroll down")
    assert f"[screen {n} of {n}]" in obs and "more screens" not in obs
    assert b("scroll down").startswith("error: already at the end")
    assert browser(net)("scroll down").startswith("error: no page is open")


def test_byte_cap_truncates_and_says_so(net):
    full = browser(net, page_chars=100_000)(f"open {net['wiki']}/")
    assert "truncated" not in full
    capped = browser(net, page_chars=100_000, max_bytes=3000)(f"open {net['wiki']}/")
    assert capped.endswith("[page truncated: only its first 3000 bytes were fetched]")
    assert len(capped) < 3000 < len(full) and capped.splitlines()[1] in full


def test_non_html_404_and_failures_are_observations(net):
    world = generate()
    slug = next(iter(world.entities))
    b = browser(net, timeout_s=1)
    obs = b(f"open {net['wiki']}/data/{slug}.json")
    assert obs.startswith(f"error: {net['wiki']}/data/{slug}.json is application/json (") and "not a page" in obs
    assert b(f"open {net['wiki']}/logo.png").startswith(f"error: {net['wiki']}/logo.png is image/png (")
    obs = b(f"open {net['wiki']}/wiki/Nowhere_Town")
    assert obs.startswith(f"error: fetching {net['wiki']}/wiki/Nowhere_Town: HTTP 404") and \
        "no article named Nowhere_Town" in obs
    obs = b(f"open http://127.0.0.1:{net['closed']}/x")
    assert obs.startswith(f"error: fetching http://127.0.0.1:{net['closed']}/x: connection failed"), obs
    t0 = time.monotonic()
    obs = b(f"open {net['helper']}/slow")
    assert obs == f"error: fetching {net['helper']}/slow: no complete answer within 1 s" and time.monotonic() - t0 < 3


def test_hosts_off_the_egress_list_are_refused_and_logged(net):
    b = browser(net)
    url = f"{net['outside']}/secret"
    host = url.split("/")[2]
    obs = b(f"open {url}")
    assert obs.startswith(f"error: fetching {url}: host {host} is not on this run's egress list (allowed: ")
    obs = b(f"open {net['helper']}/out")                       # an allowed host redirecting off the list
    assert obs.startswith(f"error: fetching {url}: host {host} is not on this run's egress list")
    assert net["outside_hits"] == [] and "/out" in net["helper_hits"]
    assert "only http and https" in b("open file:///etc/passwd")
    deadline = time.monotonic() + 5
    while b.session not in (log := net["log"].read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    refused = [line for line in log.splitlines() if "egress REFUSED" in line and b.session in line]
    assert len(refused) == 3 and f"url={url}" in refused[0] and "run=run-b" in refused[0]
    assert any(f"session={b.session} url={net['helper']}/out status=302" in line for line in log.splitlines())
    assert TOKEN not in log


def test_the_gateway_fetch_api(net):
    with httpx.Client(base_url=net["gateway"], timeout=10, trust_env=False) as c:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert c.post("/v1/fetch", json={"url": f"{net['wiki']}/"}).status_code == 401
        r = c.post("/v1/fetch", headers=auth, json={"url": f"{net['wiki']}/", "max_bytes": 100})
        data = r.json()
        assert r.status_code == 200 and data["status"] == 200 and data["bytes"] == 100 and data["truncated"]
        r = c.post("/v1/fetch", headers=auth, json={"url": f"{net['wiki']}/go/X"})
        assert r.json()["status"] == 302 and r.json()["location"] == "/wiki/X"   # not followed
        r = c.post("/v1/fetch", headers=auth, json={"url": f"{net['outside']}/"})
        assert r.status_code == 403 and "egress list" in r.json()["detail"]
        assert c.post("/v1/fetch", headers=auth, json={"nope": 1}).status_code == 400
        metrics = c.get("/metrics", headers=auth).text
        assert re.search(r'parkrl_gateway_fetches_total\{outcome="refused"\} [1-9]', metrics)
        assert re.search(r'parkrl_gateway_fetches_total\{outcome="ok"\} [1-9]', metrics)
        assert c.get("/healthz").json()["egress_hosts"][0] == net["wiki"].removeprefix("http://")


def test_both_call_formats_and_the_tool_environment(net, monkeypatch):
    from parkrl.envs import ToolEnvironment
    from parkrl.tools import BUILTIN_TOOLS

    world = generate()
    name = world.of_kind("town")[0].name
    b = browser(net)
    tools = {"browser": b}
    (call,) = find_tool_calls(f"<browser>search {name}</browser>", "tag", tools)
    obs, ok = run_tool_call(call, tools)
    assert ok and obs.splitlines()[1] == f"[1] {name}"
    (call,) = find_tool_calls('<tool_call>{"name": "browser", "arguments": {"command": "open 1"}}</tool_call>', "json")
    obs, ok = run_tool_call(call, tools)
    assert ok and obs.startswith(f"{name} - Parkrl Wiki")
    # ToolEnvironment builds its tools per episode from env.args.tool_args: each episode has its own page
    monkeypatch.setitem(BUILTIN_TOOLS, "browser", BrowserTool)
    args = {"browser": {"search_url": net["wiki"], "gateway_url": net["gateway"], "token_file": net["token_file"]}}
    one, two = (ToolEnvironment(tools=["browser"], call_format="tag", tool_args=args) for _ in range(2))
    assert "<browser>command</browser>" in one.reset({"question": "q"})[0]["content"] and not one.uses_sandbox
    assert ToolEnvironment(tools=["browser"]).uses_sandbox      # the run's gateway: checked before step 1
    assert one.step(f"<browser>search {name}</browser>").observation[0]["content"].splitlines()[1] == f"[1] {name}"
    assert two.step("<browser>open 1</browser>").observation[0]["content"].startswith("error: there is no link [1]: no")


class Fixed(SearchBackend):
    """A user's backend: one fixed hit, fetched nowhere."""

    def __init__(self, url: str) -> None:
        self.url = url

    def search(self, query: str, k: int):
        from parkrl.tools.browser import Result

        return [Result(f"Home for {query}", f"{self.url}/", "the main page")]


def test_own_backends_no_gateway_and_direct_mode(net, caplog):
    from parkrl.config import ConfigError
    from parkrl.tools.sandboxed import connect

    b = browser(net, search_backend="test_browser.Fixed", search_args={"url": net["wiki"]})
    assert b("search x").splitlines()[1] == "[1] Home for x" and "The Parkrl Wiki" in b("open 1")
    with pytest.raises(ConfigError, match="search_backend"):
        browser(net, search_backend="test_browser.Helper")
    connect(None)
    assert BrowserTool(search_url=net["wiki"])("search x").startswith("error: no gateway to fetch through")
    with caplog.at_level(logging.WARNING, logger="parkrl.tools.browser"):
        direct = BrowserTool(search_url=net["wiki"], insecure_direct=True)
    assert direct("search Mills").splitlines()[1].startswith("[1] ")
    assert "outside secret page" in direct(f"open {net['outside']}/secret")  # no egress list: that is the danger
    net["outside_hits"].clear()


def test_egress_policy_and_gateway_flags():
    from parkrl.gateway.__main__ import build_parser, config_from_args

    policy = EgressPolicy(("127.0.0.1:8090", "Example.org", "[::1]:9000"))
    assert policy.check("http://127.0.0.1:8090/wiki/x") == "127.0.0.1:8090"
    assert policy.check("https://example.org/a") == "example.org:443" and policy.check("http://EXAMPLE.org/")
    assert policy.check("http://[::1]:9000/") == "[::1]:9000"
    for url, msg in (("http://127.0.0.1:8091/", "not on this run's egress list"), ("ftp://example.org/", "scheme"),
                     ("http://user:pw@example.org/", "credentials"), ("http://example.org:8080/", "egress list"),
                     ("http://127.0.0.1:99999/", "valid URL"), ("/relative", "scheme")):
        with pytest.raises(EgressRefused, match=msg):
            policy.check(url)
    with pytest.raises(EgressRefused, match=r"allowed: none"):
        EgressPolicy().check("http://127.0.0.1:8090/")
    for bad in ("http://x:1", "x:1/path", "x:port"):
        with pytest.raises(ValueError, match="--egress-hosts entry"):
            parse_host(bad)
    base = ["--insecure-no-auth", "--servers", "http://127.0.0.1:1"]
    args = build_parser().parse_args(base + ["--egress-hosts", "127.0.0.1:1, wiki:8090", "--fetch-max-kb", "4"])
    assert config_from_args(args).egress_hosts == ["127.0.0.1:1", "wiki:8090"]
    assert config_from_args(args).fetch_max_bytes == 4096
    assert config_from_args(build_parser().parse_args(base)).egress_hosts == []   # secure by default: no egress
    with pytest.raises(ValueError, match="egress-hosts entry"):
        config_from_args(build_parser().parse_args(base + ["--egress-hosts", "a/b"]))


def test_html_to_text():
    page = html_to_page("http://h/dir/p", '<html><head><title>T</title><style>x{}</style></head><body>'
                        '<h1>Head</h1><p>Go <a href="q">there</a> or <a href="/r">back</a>, <a href="q">again</a>.'
                        '</p><ul><li>one</li><li>two</li></ul><a href="#top">top</a><script>evil()</script>'
                        '</body></html>')
    assert page.title == "T" and page.links == ["http://h/dir/q", "http://h/r"]
    assert page.text == "Head\nGo [1] there or [2] back, [1] again.\n- one\n- two\ntop"
