"""A small OpenAI-completions-compatible server written for the tests.

It serves `/v1/completions` on 127.0.0.1 with real log-probabilities of the next token, computed by a
TransformersJudge's model, and injects faults per request: a queue consumed one per request in arrival order,
faults tied to prompts that contain a given text, and a limit after which it dies (resets every connection).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from eztag.judges.transformers import TransformersJudge


class CompletionsServer:
    """Start with `start()`, stop with `stop()`; `url` is the base URL ending in /v1."""

    def __init__(self, judge: TransformersJudge, *, sleep_seconds: float = 1.0) -> None:
        self.judge = judge
        self.sleep_seconds = sleep_seconds
        self.faults: list[str] = []
        self.faults_by_text: dict[str, str] = {}
        self.answer_limit: int | None = None
        self.requests = 0
        self.answered = 0
        self.faults_served = 0
        self.lock = threading.Lock()
        self.model_lock = threading.Lock()
        tokenizer = judge.tokenizer
        self.token_texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> CompletionsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def top_logprobs(self, prompt: str, count: int) -> dict[str, float]:
        """The `count` most likely next tokens of `prompt` as {token text: log-probability}."""
        ids = self.judge.tokenizer(prompt, add_special_tokens=self.judge.add_special_tokens)["input_ids"]
        with self.model_lock, torch.inference_mode():
            logits = self.judge.model(input_ids=torch.tensor([ids]).to(self.judge.device)).logits[0, -1]
            row = torch.log_softmax(logits.float(), dim=-1).cpu()
        values, indices = row.topk(min(count, row.numel()))
        top: dict[str, float] = {}
        for value, index in zip(values.tolist(), indices.tolist(), strict=True):
            top.setdefault(self.token_texts[index], value)
        return top

    def _fault(self, prompt: str) -> str | None:
        with self.lock:
            self.requests += 1
            if self.answer_limit is not None and self.answered >= self.answer_limit:
                fault: str | None = "reset"
            elif self.faults:
                fault = self.faults.pop(0)
            else:
                fault = next((fault for text, fault in self.faults_by_text.items() if text in prompt), None)
            self.faults_served += fault is not None
            return fault

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fault = server._fault(body["prompt"])
                if fault in ("reset", "close"):
                    if fault == "reset":
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault in ("500", "429", "503", "400"):
                    self.send_error(int(fault))
                    return
                if fault == "sleep":
                    time.sleep(server.sleep_seconds)
                if fault == "malformed":
                    self._send(b'{"choices": [{"text": " Yes", "logprobs": {"top_logprobs": [{"')
                    return
                logprobs = None
                if fault != "no_logprobs":
                    top = server.top_logprobs(body["prompt"], int(body["logprobs"]))
                    first = next(iter(top))
                    logprobs = {"tokens": [first], "token_logprobs": [top[first]], "top_logprobs": [top]}
                with server.lock:
                    server.answered += 1
                choice = {"index": 0, "text": "", "logprobs": logprobs, "finish_reason": "length"}
                answer = {"object": "text_completion", "model": body["model"], "choices": [choice]}
                self._send(json.dumps(answer).encode())

            def _send(self, payload: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timed out)
                    self.wfile.write(payload)

        return Handler
