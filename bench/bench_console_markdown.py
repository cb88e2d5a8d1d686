"""The console's Markdown (issue 24): page weight, and how long a long transcript takes to render.

The console renders agent messages in the browser with the vendored ``marked`` and sanitizes
them with ``DOMPurify``. This measures what that costs, in headless Debian Chromium, with the
console's own files served from the package (no node needed: Playwright answers the page's
requests from ``conductor_trio/web/console/``):

* page weight: the bytes of every file ``/console`` loads, raw and gzipped, the vendored
  libraries apart;
* rendering: ``--turns`` turns (default 200), each an agent message of ~1.5 kB of Markdown
  (headings, lists, code, links, a table), a command with output and a diff; the time to
  render every message (Markdown + sanitizing), against plain text as a baseline, and the time
  to build the whole conversation (``Conversation.addTurns``) and lay it out.

    .venv/bin/python -m bench.bench_console_markdown [--turns 200] [--runs 5] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import gzip
import re
import statistics
from importlib.resources import files
from typing import Any

from playwright.sync_api import Route, sync_playwright

from bench.common import add_common_args, machine_facts, print_result
from conductor_trio.web.console import ASSETS, SECURITY_HEADERS, VENDORED

CHROMIUM = "/usr/bin/chromium"
ORIGIN = "http://console.bench"

MESSAGE = """## Step {i}: what changed

I looked at `src/module_{i}.py` and found **two** problems:

1. The loop in `parse()` reads past the end when the input is empty.
2. `flush()` is called twice on shutdown, see [the docs](https://example.org/docs/{i}).

```python
def parse(data: bytes) -> list[str]:
    if not data:
        return []
    return data.decode().split("\\n")
```

| file | lines | status |
|---|---|---|
| src/module_{i}.py | 42 | fixed |
| tests/test_module_{i}.py | 17 | added |

> Note: nothing else needed a change; the tests pass (`pytest -q`: 128 passed).

Next I will look at the *second* module and its callers, then run the whole suite again.
"""

RENDER_JS = """async ([turns, runs]) => {
  const {renderMarkdown} = await import("/console/markdown.js");
  const {Conversation} = await import("/console/conversation.js");
  const texts = turns.map((t) => t.items.find((i) => i.type === "agentMessage").text);
  const time = (fn) => { const t0 = performance.now(); fn(); return performance.now() - t0; };
  const md = [], plain = [], build = [];
  for (let r = 0; r < runs; r++) {
    md.push(time(() => { for (const t of texts) renderMarkdown(t); }));
    plain.push(time(() => {
      for (const t of texts) { const p = document.createElement("p"); p.textContent = t; }
    }));
    const box = document.createElement("div");
    box.className = "conversation";
    document.body.append(box);
    const c = new Conversation(box, {decide: () => {}});
    build.push(time(() => { c.addTurns(turns); void box.scrollHeight; }));
    box.remove();
  }
  return {md, plain, build};
}"""


def _turns(count: int) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        diff = "".join(f"+line {n} of the new file\n" for n in range(20))
        out.append({
            "turnId": f"turn-{i}", "status": "completed", "origin": "turn",
            "input": [{"type": "text", "text": f"fix module {i}, then run the tests"}],
            "tokenUsage": {"last": {"totalTokens": 1500, "inputTokens": 1200,
                                    "outputTokens": 300}},
            "items": [
                {"type": "commandExecution", "id": f"c{i}", "command": "pytest -q",
                 "cwd": "/home/me/src/project", "status": "completed", "exitCode": 0,
                 "durationMs": 1234, "output": "." * 128 + "\n128 passed in 1.23s\n"},
                {"type": "fileChange", "id": f"f{i}", "status": "completed",
                 "changes": [{"path": f"src/module_{i}.py", "kind": "add",
                              "diff": f"--- /dev/null\n+++ b/src/module_{i}.py\n"
                                      f"@@ -0,0 +1,20 @@\n{diff}"}]},
                {"type": "agentMessage", "id": f"m{i}", "text": MESSAGE.format(i=i)},
            ],
        })
    return out


def _weight() -> dict[str, Any]:
    here = files("conductor_trio.web.console")
    page = here.joinpath("index.html").read_bytes()
    loaded = {"index.html": page}
    for name in ASSETS:
        if name.endswith((".js", ".css", ".svg")) and name != "action.js":
            loaded[name] = here.joinpath(name).read_bytes()
    for name in VENDORED:
        if name.endswith(".js"):
            loaded[f"vendor/{name}"] = here.joinpath("vendor", name).read_bytes()

    def sizes(names: list[str]) -> dict[str, int]:
        raw = sum(len(loaded[n]) for n in names)
        gz = sum(len(gzip.compress(loaded[n], 9)) for n in names)
        return {"files": len(names), "bytes": raw, "gzip_bytes": gz}

    own = [n for n in loaded if not n.startswith("vendor/")]
    vendored = [n for n in loaded if n.startswith("vendor/")]
    return {"own": sizes(own), "vendored": sizes(vendored), "total": sizes(list(loaded))}


def _serve(route: Route) -> None:
    path = re.sub(r"^/console/?", "", route.request.url.removeprefix(ORIGIN).split("?")[0])
    here = files("conductor_trio.web.console")
    name = path or "index.html"
    kinds = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml",
             "html": "text/html"}
    try:
        body = here.joinpath(*name.split("/")).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        route.fulfill(status=404, body="{}")
        return
    route.fulfill(status=200, body=body, headers={
        **SECURITY_HEADERS, "Content-Type": kinds[name.rsplit(".", 1)[-1]]})


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.turns, args.runs = 10, 1
    turns = _turns(args.turns)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route(f"{ORIGIN}/**", _serve)
            # The API answers nothing here: only the files matter.
            page.route(f"{ORIGIN}/v1/**", lambda r: r.fulfill(status=503, body="{}"))
            page.route(f"{ORIGIN}/metrics", lambda r: r.fulfill(status=404, body="{}"))
            page.goto(f"{ORIGIN}/console")
            timings = page.evaluate(RENDER_JS, [turns, args.runs])
        finally:
            browser.close()
    chars = sum(len(MESSAGE.format(i=i)) for i in range(args.turns))
    result = {
        "benchmark": "console_markdown", "machine": machine_facts(),
        "turns": args.turns, "markdown_chars": chars, "weight": _weight(),
        "markdown_ms_median": statistics.median(timings["md"]),
        "plain_ms_median": statistics.median(timings["plain"]),
        "conversation_build_ms_median": statistics.median(timings["build"]),
        "runs_ms": timings,
    }
    w = result["weight"]
    print_result(result, [
        f"page weight: own {w['own']['bytes']} B ({w['own']['gzip_bytes']} B gzip) in "
        f"{w['own']['files']} files; vendored {w['vendored']['bytes']} B "
        f"({w['vendored']['gzip_bytes']} B gzip); total {w['total']['bytes']} B "
        f"({w['total']['gzip_bytes']} B gzip)",
        f"{args.turns} messages, {chars} chars of Markdown: render + sanitize "
        f"{result['markdown_ms_median']:.1f} ms (plain text {result['plain_ms_median']:.1f} ms);"
        f" the whole conversation built and laid out "
        f"{result['conversation_build_ms_median']:.1f} ms (median of {args.runs})",
    ], as_json=args.json)


if __name__ == "__main__":
    main()
