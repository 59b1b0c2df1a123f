"""A judge over any OpenAI-compatible `/v1/completions` server (vLLM, llama.cpp, TGI, ...), stdlib HTTP only.

Each prompt is one request for a single token (`max_tokens=1`, `temperature=0`, `echo=false`) with the top
`logprobs` of that token; P(yes) comes from the yes/no spellings among them (spellings outside the returned top
list count as zero). Requests run in a bounded thread pool with a per-request timeout; 429/5xx answers, timeouts,
connection errors, malformed JSON and missing logprobs are retried with exponential backoff and jitter, and after
the last attempt the pair is a failure with its reason, never a score.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eztag.judges import Judge, Judgment, judgment_from_classes
from eztag.prompts import SCALES, Pair, PromptTemplate, chat_text, truncate_tokens

RETRIED_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class RetryableError(Exception):
    """A failed attempt worth repeating; `kind` names the reason in reports."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class OpenAIJudge(Judge):
    """`model` is the model name the server knows; `tokenizer` (a local path) applies its chat template."""

    def __init__(
        self,
        model: str,
        template: PromptTemplate,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key_env: str = "OPENAI_API_KEY",
        tokenizer: str | None = None,
        top_logprobs: int = 20,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__(template)
        self.model_id = model
        self.url = base_url.rstrip("/") + "/completions"
        self.api_key = os.environ.get(api_key_env)
        self.tokenizer = None
        if tokenizer is not None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.top_logprobs = top_logprobs
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff

    def truncate(self, documents: Sequence[str], max_tokens: int) -> list[str]:
        if self.tokenizer is None:
            return super().truncate(documents, max_tokens)
        return truncate_tokens(self.tokenizer, documents, max_tokens)

    def score(self, pairs: Sequence[Pair]) -> list[Judgment]:
        prompts = [chat_text(self.tokenizer, self.template, pair) for pair in pairs]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self.score_prompt, prompts))

    def score_prompt(self, prompt: str) -> Judgment:
        """One prompt, retried up to `max_attempts` times."""
        attempt = 1
        while True:
            try:
                return self._judgment(self._request(prompt))
            except RetryableError as error:
                if attempt >= self.max_attempts:
                    return Judgment.failed(f"{error} (after {attempt} attempts)")
            except urllib.error.HTTPError as error:
                return Judgment.failed(f"http_{error.code}: {error.reason} (not retried)")
            delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            time.sleep(delay / 2 + random.uniform(0, delay / 2))
            attempt += 1

    def _request(self, prompt: str) -> dict[str, Any]:
        body = {
            "model": self.model_id,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": self.top_logprobs,
            "echo": False,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            if error.code in RETRIED_STATUS:
                raise RetryableError(f"http_{error.code}", str(error.reason)) from None
            raise
        except urllib.error.URLError as error:
            kind = "timeout" if isinstance(error.reason, TimeoutError) else "connection"
            raise RetryableError(kind, str(error.reason)) from None
        except TimeoutError as error:
            raise RetryableError("timeout", str(error) or "read timed out") from None
        except (OSError, http.client.HTTPException) as error:
            raise RetryableError("connection", f"{type(error).__name__}: {error}") from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RetryableError("malformed_json", str(error)) from None

    def _judgment(self, response: dict[str, Any]) -> Judgment:
        try:
            top = response["choices"][0]["logprobs"]["top_logprobs"][0]
            if not isinstance(top, dict) or not top:
                raise TypeError("top_logprobs[0] is not a non-empty object")
        except (KeyError, IndexError, TypeError) as error:
            raise RetryableError("missing_logprobs", f"{type(error).__name__}: {error}") from None
        return judgment_from_classes(
            [[float(top[token]) for token in spellings if token in top] for spellings in SCALES[self.template.scale]]
        )
