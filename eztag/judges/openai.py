"""A judge over any OpenAI-compatible server (vLLM, llama.cpp, TGI, ...), stdlib HTTP only.

Route `completions` (`/v1/completions`): eztag renders the prompt (with `tokenizer`'s chat template when given);
route `chat` (`/v1/chat/completions`): the server applies its own chat template to the messages (an answer prefix
goes as the start of the assistant message, with vLLM's `continue_final_message`).
Each prompt is one request for a single token (`max_tokens=1`, `temperature=0`) with the top
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

from eztag.errors import EztagError, did_you_mean
from eztag.judges import Judge, Judgment, judgment_from_classes
from eztag.prompts import SCALES, Pair, PromptTemplate, chat_text, truncate_tokens

ROUTES = ("completions", "chat")
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
        route: str = "completions",
        api_key_env: str = "OPENAI_API_KEY",
        tokenizer: str | None = None,
        top_logprobs: int = 20,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        if route not in ROUTES:
            raise EztagError(f"unknown route '{route}'{did_you_mean(route, ROUTES)}", field="judge.options.route")
        super().__init__(template)
        self.model_id = model
        self.route = route
        self.url = base_url.rstrip("/") + ("/completions" if route == "completions" else "/chat/completions")
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
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self.score_request, [self.request_body(pair) for pair in pairs]))

    def request_body(self, pair: Pair) -> dict[str, Any]:
        """The JSON body asking for the top log-probabilities of the one token after this pair's prompt."""
        body: dict[str, Any] = {"model": self.model_id, "max_tokens": 1, "temperature": 0}
        if self.route == "completions":
            prompt = chat_text(self.tokenizer, self.template, pair)
            return body | {"prompt": prompt, "logprobs": self.top_logprobs, "echo": False}
        messages = self.template.messages(pair)
        if self.template.answer_prefix:
            messages.append({"role": "assistant", "content": self.template.answer_prefix})
            body |= {"continue_final_message": True, "add_generation_prompt": False}
        return body | {"messages": messages, "logprobs": True, "top_logprobs": self.top_logprobs}

    def score_request(self, body: dict[str, Any]) -> Judgment:
        """One request, retried up to `max_attempts` times."""
        attempt = 1
        while True:
            try:
                return self._judgment(self._request(body))
            except RetryableError as error:
                if attempt >= self.max_attempts:
                    return Judgment.failed(f"{error} (after {attempt} attempts)")
            except urllib.error.HTTPError as error:
                return Judgment.failed(f"http_{error.code}: {error.reason} (not retried)")
            delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            time.sleep(delay / 2 + random.uniform(0, delay / 2))
            attempt += 1

    def _request(self, body: dict[str, Any]) -> dict[str, Any]:
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
            logprobs = response["choices"][0]["logprobs"]
            if self.route == "completions":
                top = logprobs["top_logprobs"][0]
            else:  # chat: a list of {token, logprob} for the first generated token
                top = {entry["token"]: entry["logprob"] for entry in logprobs["content"][0]["top_logprobs"]}
            if not isinstance(top, dict) or not top:
                raise TypeError("top_logprobs[0] is not a non-empty object")
        except (KeyError, IndexError, TypeError) as error:
            raise RetryableError("missing_logprobs", f"{type(error).__name__}: {error}") from None
        return judgment_from_classes(
            [[float(top[token]) for token in spellings if token in top] for spellings in SCALES[self.template.scale]]
        )
