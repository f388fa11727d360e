"""The LLM back-end against a scripted local OpenAI-compatible server (no network)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sympy as sp

from recurrences.constants.formula import ContinuedFraction, K, N, Series
from recurrences.constants.llm import ChatClient, LLMConfig, LLMError, classify, extract, read_with_llm


class Script:
    def __init__(self, answers: list, delay: float = 0.0) -> None:
        self.answers = list(answers)
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.delay = delay


def _handler(script: Script):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args):  # silence
            pass

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            script.requests.append(json.loads(body))
            script.headers.append(dict(self.headers))
            if self.path != "/v1/chat/completions":
                self.send_response(404)
                self.end_headers()
                return
            if script.delay:
                time.sleep(script.delay)
            ans = script.answers.pop(0) if script.answers else {"answer": False}
            if isinstance(ans, int):
                self.send_response(ans)
                self.end_headers()
                self.wfile.write(b"server error")
                return
            content = ans if isinstance(ans, str) else json.dumps(ans)
            out = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    return H


@pytest.fixture
def server():
    servers = []

    def start(answers, delay=0.0):
        script = Script(answers, delay)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        cfg = LLMConfig(
            base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1",
            model="m-large",
            classify_model="m-small",
            api_key_env="TEST_RECURRENCES_KEY",
            timeout_s=5,
        )
        return script, ChatClient(cfg)

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


LATEX = r"\frac{\pi}{4} = \sum_{k=0}^\infty \frac{(-1)^k}{2k+1}"


def test_classify_extract_repair(server, monkeypatch):
    monkeypatch.setenv("TEST_RECURRENCES_KEY", "sk-test")
    script, client = server(
        [
            {"answer": True},  # classify
            {"answer": True},  # turn 1
            {"type": "series"},  # turn 2
            '{"term": "(-1)**k/(2*k + 1", "dummy_var": "k", "start": 0, "value": "pi/4"}',  # broken: missing ')'
            '```json\n{"term": "(-1)**k/(2*k + 1)", "dummy_var": "k", "start": 0, "value": "pi/4"}\n```',
        ]
    )
    rs = read_with_llm(LATEX, client=client)
    assert len(rs) == 1
    r = rs[0]
    assert isinstance(r.formula, Series) and r.formula.start == 0
    assert sp.simplify(r.formula.term - (-1) ** K / (2 * K + 1)) == 0
    assert r.stated_value == sp.pi / 4 and r.source == "llm" and r.extra["attempts"] == 2
    # the classify call used the small model, the extraction the large one
    assert [q["model"] for q in script.requests] == ["m-small"] + ["m-large"] * 4
    assert all(q["temperature"] == 0 for q in script.requests)
    # the parse error and the last answer were fed back
    repair = script.requests[-1]["messages"][-1]["content"]
    assert "could not be parsed" in repair and "(2*k + 1" in repair and LATEX in repair
    assert script.headers[0]["Authorization"] == "Bearer sk-test"


def test_continued_fraction_and_variable_rename(server):
    _, client = server([{"answer": True}, {"type": "cf"}, {"an": "2*m + 1", "bn": "m**2", "value": "4/pi"}])
    r = extract(r"\frac{4}{\pi} = 1 + \frac{1}{3 + \frac{4}{5 + \dots}}", client=client)
    assert isinstance(r.formula, ContinuedFraction)
    assert r.formula.a == 2 * N + 1 and r.formula.b == N**2 and r.stated_value == 4 / sp.pi


def test_hostile_answers_are_refused_and_loop_gives_up(server):
    evil = {"term": "__import__('os').system('touch /tmp/pwned')", "dummy_var": "k", "start": 0, "value": ""}
    script, client = server(
        [
            {"answer": True},
            {"type": "series"},
            evil,
            evil,
            {"term": "9**9**9**9", "dummy_var": "k", "start": 0},
        ]
    )
    with pytest.raises(LLMError, match="after 3 attempts"):
        extract(LATEX, client=client)
    assert len(script.requests) == 5  # 2 turns + exactly 3 attempts
    errors = []
    script, client = server([{"answer": True}, {"answer": True}, {"type": "series"}] + [evil] * 3)
    assert read_with_llm(LATEX, client=client, on_error=errors.append) == []
    assert errors and isinstance(errors[0], LLMError)


def test_negative_answers(server):
    _, client = server([{"answer": False}])
    assert read_with_llm(LATEX, client=client) == []
    _, client = server([{"answer": "yes"}, {"type": "neither"}])
    assert extract(LATEX, client=client) is None
    _, client = server(["this is not json"])
    with pytest.raises(LLMError, match="not JSON"):
        classify(LATEX, client=client)


def test_http_error_and_timeout(server):
    _, client = server([500])
    with pytest.raises(LLMError, match="HTTP 500"):
        classify(LATEX, client=client)
    _, client = server([{"answer": True}], delay=1.5)
    client.config.timeout_s = 0.3
    t = time.perf_counter()
    with pytest.raises(LLMError, match="timed out"):
        classify(LATEX, client=client)
    assert time.perf_counter() - t < 1.4


def test_config_validation():
    with pytest.raises(ValueError, match="base_url"):
        LLMConfig(base_url="file:///etc/passwd")
    with pytest.raises(ValueError, match="timeout_s"):
        LLMConfig(base_url="http://127.0.0.1:1", timeout_s=0)
    with pytest.raises(ValueError, match="max_tries"):
        LLMConfig(base_url="http://127.0.0.1:1", max_tries=0)
