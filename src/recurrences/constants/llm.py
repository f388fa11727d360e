"""Optional LLM back-end for reading formulas (spec §1 steps 3-4), over the OpenAI-compatible chat API.

``POST {base_url}/chat/completions`` with ``urllib`` only (no new dependency), temperature 0 and JSON answers.
The base URL, the models and the name of the environment variable holding the API key are configurable
(:class:`LLMConfig`; defaults from ``RECURRENCES_LLM_BASE_URL``, ``RECURRENCES_LLM_MODEL``,
``RECURRENCES_LLM_CLASSIFY_MODEL`` and the key from ``OPENAI_API_KEY``). Every request has a timeout.

The loop, as upstream:

1. **classify** (one request, the small model): can this LaTeX be rearranged to compute the constant?
2. **extract** (one multi-turn chat, the large model): is it a series or continued fraction computing the
   constant? -> which (``series`` | ``cf`` | ``neither``) -> its fields as sympy strings
   (series: ``term``, ``dummy_var``, ``start``; cf: ``an`` (partial denominator a(n)), ``bn`` (partial
   numerator b(n)); both: ``value``, what the equation states the formula equals, or "").
3. **repair**: every field is parsed by the whitelisting parser (:mod:`.safe_parse`, never ``sympify``);
   on an error the model gets the error text (at most 400 characters), its last answer and the LaTeX, and
   answers again: at most ``max_tries`` (3) attempts in all.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp

from recurrences.constants.formula import ContinuedFraction, K, N, Reading, Series
from recurrences.constants.safe_parse import SafeParseError, parse_expr

__all__ = ["LLMConfig", "LLMError", "ChatClient", "classify", "extract", "read_with_llm"]

MAX_RESPONSE_BYTES = 1 << 20
MAX_ERROR_CHARS = 400
MAX_LATEX_CHARS = 1500  # upstream skips longer equations


class LLMError(RuntimeError):
    """The chat endpoint failed (network, HTTP status, timeout, malformed answer) or the loop gave up."""


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass
class LLMConfig:
    base_url: str = field(
        default_factory=lambda: _env("RECURRENCES_LLM_BASE_URL", "https://api.openai.com/v1")
    )
    model: str = field(default_factory=lambda: _env("RECURRENCES_LLM_MODEL", "gpt-4o"))
    classify_model: str = field(default_factory=lambda: _env("RECURRENCES_LLM_CLASSIFY_MODEL", "gpt-4o-mini"))
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the variable holding the key
    timeout_s: float = 60.0
    max_tries: int = 3
    temperature: float = 0.0
    json_mode: bool = True  # send response_format={"type": "json_object"}

    def __post_init__(self) -> None:
        if not re.match(r"^https?://", self.base_url):
            raise ValueError(f"base_url: expected an http(s) URL, got {self.base_url!r}")
        if not (0 < self.timeout_s <= 600):
            raise ValueError(f"timeout_s: expected a number in (0, 600], got {self.timeout_s}")
        if not (1 <= self.max_tries <= 10):
            raise ValueError(f"max_tries: expected 1..10, got {self.max_tries}")


class ChatClient:
    """Minimal client for ``POST {base_url}/chat/completions``."""

    def __init__(self, config: LLMConfig | None = None) -> None:
        self.config = config or LLMConfig()
        self.requests = 0

    def chat(self, messages: list[dict], *, model: str | None = None) -> str:
        cfg = self.config
        payload = {"model": model or cfg.model, "messages": messages, "temperature": cfg.temperature}
        if cfg.json_mode:
            payload["response_format"] = {"type": "json_object"}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(cfg.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(
            cfg.base_url.rstrip("/") + "/chat/completions",
            data=json.dumps(payload).encode(),
            headers=headers,
            method="POST",
        )
        self.requests += 1
        try:
            with urllib.request.urlopen(req, timeout=cfg.timeout_s) as resp:  # noqa: S310 - configured URL
                raw = resp.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as e:
            raise LLMError(f"chat endpoint answered HTTP {e.code}: {e.read(400)!r}") from e
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise LLMError(f"chat endpoint unreachable or timed out after {cfg.timeout_s} s: {e}") from e
        if len(raw) > MAX_RESPONSE_BYTES:
            raise LLMError(f"chat answer larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            data = json.loads(raw)
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise LLMError(f"malformed chat answer: {raw[:200]!r}") from e
        if not isinstance(content, str):
            raise LLMError("chat answer content is not text")
        return content


def _json_answer(content: str) -> dict:
    s = content.strip()
    m = re.search(r"```(?:json)?\s*(.*?)```", s, re.S)
    if m:
        s = m.group(1).strip()
    try:
        obj = json.loads(s)
    except ValueError:
        m = re.search(r"\{.*\}", s, re.S)
        if not m:
            raise LLMError(f"answer is not JSON: {content[:200]!r}") from None
        try:
            obj = json.loads(m.group(0))
        except ValueError as e:
            raise LLMError(f"answer is not JSON: {content[:200]!r}") from e
    if not isinstance(obj, dict):
        raise LLMError(f"answer is not a JSON object: {content[:200]!r}")
    return obj


def _bool(obj: dict) -> bool:
    v = obj.get("answer", obj.get("result", obj.get("value")))
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "yes", "false", "no"):
        return v.strip().lower() in ("true", "yes")
    raise LLMError(f"expected a boolean answer, got {obj!r}")


_CONST_TEXT = {"pi": "pi", "e": "e (Euler's number)", "zeta3": "zeta(3)", "catalan": "Catalan's constant"}


def _system(constant: str) -> str:
    c = _CONST_TEXT.get(constant, constant)
    return (
        f"You read LaTeX equations from mathematics papers and decide whether they are formulas that can be "
        f"rearranged to compute {c}; we care about infinite series and continued fractions. Answer only with a "
        f"JSON object."
    )


def classify(latex: str, *, constant: str = "pi", client: ChatClient | None = None) -> bool:
    """Step 3: does the equation hold a series or continued fraction that computes the constant?"""
    client = client or ChatClient()
    msgs = [
        {"role": "system", "content": _system(constant)},
        {
            "role": "user",
            "content": f"Equation:\n{latex}\nIs this a formula that can be rearranged to compute "
            f'{_CONST_TEXT.get(constant, constant)}? Answer {{"answer": true}} or {{"answer": false}}.',
        },
    ]
    return _bool(_json_answer(client.chat(msgs, model=client.config.classify_model)))


_SERIES_FIELDS = (
    'Give the outermost series as JSON {"term": sympy string of the summand, "dummy_var": the summation '
    'variable, "start": the first index (an integer), "value": sympy string of the value the equation states '
    'the series equals, in pi, or ""}. Use factorial, binomial, RisingFactorial for (x)_n, gamma; ** for '
    "powers. Example: for \\sum_{k=1}^\\infty \\frac{(-1)^k}{2k+1} = \\frac{\\pi}{4} - 1 answer "
    '{"term": "(-1)**k/(2*k+1)", "dummy_var": "k", "start": 1, "value": "pi/4 - 1"}.'
)
_CF_FIELDS = (
    'Give the continued fraction a(0) + b(1)/(a(1) + b(2)/(a(2) + ...)) as JSON {"an": sympy string of the '
    'partial denominator a(n), "bn": sympy string of the partial numerator b(n), "value": sympy string of the '
    'value the equation states the continued fraction equals (including a(0)), in pi, or ""}. Example: for '
    '1 + 1/(3 + 4/(5 + 9/(7 + ...))) = 4/pi answer {"an": "2*n + 1", "bn": "n**2", "value": "4/pi"}.'
)


def _parse_fields(kind: str, obj: dict) -> Reading:
    """Build the Reading from the model's fields (whitelisting parser only); raises SafeParseError."""
    value_text = str(obj.get("value") or "").strip()
    value = parse_expr(value_text) if value_text else None
    if value is not None and value.free_symbols:
        raise SafeParseError(
            f"value: must be a number in the constant, got free symbols {value.free_symbols}"
        )
    if kind == "series":
        var = str(obj.get("dummy_var") or "k").strip()
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,7}", var):
            raise SafeParseError(f"dummy_var: expected a short name, got {var!r}")
        v = sp.Symbol(var, integer=True)
        term = parse_expr(str(obj.get("term", "")), symbols={var: v})
        try:
            start = int(str(obj.get("start", "0")).strip())
        except ValueError:
            raise SafeParseError(f"start: expected an integer, got {obj.get('start')!r}") from None
        term = term.subs(v, K)
        free = term.free_symbols - {K}
        if free:
            raise SafeParseError(f"term: unknown symbols {sorted(map(str, free))} besides {var}")
        return Reading(Series(term, start), value, "llm", [])
    a = parse_expr(str(obj.get("an", "")))
    b = parse_expr(str(obj.get("bn", "")))
    free = (a.free_symbols | b.free_symbols) - {N}
    if len(free) == 1:
        (v,) = free
        a, b = a.subs(v, N), b.subs(v, N)
    elif free:
        raise SafeParseError(f"an/bn: more than one free symbol: {sorted(map(str, free))}")
    if a == 0 or b == 0:
        raise SafeParseError("an/bn: a(n) and b(n) must not vanish identically")
    return Reading(ContinuedFraction(sp.expand(a), sp.expand(b)), value, "llm", [])


def extract(latex: str, *, constant: str = "pi", client: ChatClient | None = None) -> Reading | None:
    """Step 4 with the repair loop: the formula in ``latex`` as a Reading, or None if the model says there is
    none. Raises :class:`LLMError` if no parsable answer comes within ``max_tries`` attempts."""
    client = client or ChatClient()
    c = _CONST_TEXT.get(constant, constant)
    msgs = [
        {"role": "system", "content": _system(constant)},
        {
            "role": "user",
            "content": f"Equation:\n{latex}\nIs this a series or a continued fraction that can be "
            f'rearranged to compute {c}? Answer {{"answer": true}} or {{"answer": false}}.',
        },
    ]
    ans = client.chat(msgs)
    if not _bool(_json_answer(ans)):
        return None
    msgs += [
        {"role": "assistant", "content": ans},
        {
            "role": "user",
            "content": 'Which is it? Answer {"type": "series"}, {"type": "cf"} or {"type": "neither"}.',
        },
    ]
    ans = client.chat(msgs)
    kind = str(_json_answer(ans).get("type", "")).strip().lower()
    if kind in ("continued fraction", "continued_fraction", "pcf"):
        kind = "cf"
    if kind not in ("series", "cf"):
        return None
    msgs += [
        {"role": "assistant", "content": ans},
        {"role": "user", "content": _SERIES_FIELDS if kind == "series" else _CF_FIELDS},
    ]
    last_error = ""
    for attempt in range(client.config.max_tries):
        ans = client.chat(msgs)
        try:
            reading = _parse_fields(kind, _json_answer(ans))
            reading.notes.append(f"llm: {attempt + 1} attempt(s)")
            reading.extra["attempts"] = attempt + 1
            return reading
        except (SafeParseError, LLMError) as e:
            last_error = str(e)[:MAX_ERROR_CHARS]
            msgs += [
                {"role": "assistant", "content": ans},
                {
                    "role": "user",
                    "content": f"Your answer could not be parsed: {last_error}\n"
                    f"Your last answer was: {ans[:MAX_ERROR_CHARS]}\nThe original LaTeX: {latex}\n"
                    "Answer again with corrected sympy expressions, as the same JSON object.",
                },
            ]
    raise LLMError(f"no parsable answer after {client.config.max_tries} attempts; last error: {last_error}")


def read_with_llm(
    latex: str,
    *,
    constant: str = "pi",
    config: LLMConfig | None = None,
    client: ChatClient | None = None,
    skip_classify: bool = False,
    on_error: Callable[[Exception], None] | None = None,
) -> list[Reading]:
    """classify -> extract -> repair for one equation; [] if the model finds no formula (or on an error,
    when ``on_error`` is given it is called with the exception; otherwise the error propagates)."""
    if not isinstance(latex, str):
        raise TypeError(f"latex: expected a string, got {type(latex).__name__}")
    if len(latex) > MAX_LATEX_CHARS:
        return []
    client = client or ChatClient(config)
    try:
        if not skip_classify and not classify(latex, constant=constant, client=client):
            return []
        r = extract(latex, constant=constant, client=client)
    except LLMError as e:
        if on_error is None:
            raise
        on_error(e)
        return []
    return [] if r is None else [r]
