"""Real OpenAI-compatible HTTP servers on loopback for the generation tests.

- `ScriptedServer`: a small threaded HTTP server speaking the completions and chat
  completions APIs. Its answers follow the prompt (a topic per example, so queries and
  documents agree), it counts every call, and it misbehaves on demand: stalls, dropped
  connections, broken JSON bodies, 5xx/4xx answers (a 401 that echoes the Authorization
  header, as some proxies do), refused response formats.
- `LlamaServer`: llama.cpp's own server (`python -m llama_cpp.server`, started through the
  embedded backend so it loads the model alike) on the packaged Gemma, counting the calls
  it logs.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TOPICS = [
    "volcanoes",
    "beekeeping",
    "tax returns",
    "sourdough bread",
    "solar panels",
    "chess openings",
    "rainwater harvesting",
    "knee injuries",
    "jazz harmony",
    "container shipping",
    "bird migration",
    "password managers",
    "coral reefs",
    "violin making",
    "wind turbines",
    "ancient Rome",
]
FAULTS = ("stall", "drop", "broken_json", "http_500", "http_401", "http_401_echo", "http_403")
_KEY_OPENING = re.compile(r'"([A-Za-z_0-9]+)": "')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)


class ScriptedServer:
    """`with ScriptedServer() as server:` then point a client at `server.base_url`.

    Faults: `fail_next(kind, n)` makes the next n calls fail; `fail_when(text, kind)` makes
    every call whose prompt contains `text` fail; `refuse_formats` lists response_format
    types answered like llama.cpp's server refuses them (500 naming response_format);
    `copy_query_when(text)` makes positives of matching prompts repeat their query.
    """

    def __init__(self, *, stall_s: float = 5.0, delay_s: float = 0.0) -> None:
        self.stall_s = stall_s
        self.delay_s = delay_s
        self.calls: list[dict[str, Any]] = []
        self.faults_served: Counter[str] = Counter()
        self.copied_queries = 0
        self.refuse_formats: set[str] = set()
        self.max_in_flight = 0
        self._in_flight = 0
        self._next_faults: list[str] = []
        self._fault_rules: list[tuple[str, str]] = []
        self._copy_rules: list[str] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def fail_next(self, kind: str, times: int = 1) -> None:
        assert kind in FAULTS
        with self._lock:
            self._next_faults += [kind] * times

    def fail_when(self, text: str, kind: str) -> None:
        assert kind in FAULTS
        with self._lock:
            self._fault_rules.append((text, kind))

    def clear_faults(self) -> None:
        with self._lock:
            self._next_faults.clear()
            self._fault_rules.clear()

    def copy_query_when(self, text: str) -> None:
        self._copy_rules.append(text)

    @property
    def num_calls(self) -> int:
        with self._lock:
            return len(self.calls)

    # --- request handling ----------------------------------------------------------------

    def _fault_for(self, prompt: str) -> str | None:
        with self._lock:
            if self._next_faults:
                return self._next_faults.pop(0)
            for text, kind in self._fault_rules:
                if text in prompt:
                    return kind
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.calls.append({"path": self.path, "body": body})
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    server._serve(self, body)
                finally:
                    with server._lock:
                        server._in_flight -= 1

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        chat = handler.path.endswith("/chat/completions")
        prompt = (
            "\n".join(m["content"] for m in body.get("messages", []))
            if chat
            else body.get("prompt", "")
        )
        fault = self._fault_for(prompt)
        if fault is not None:
            with self._lock:
                self.faults_served[fault] += 1
            self._send_fault(handler, fault)
            return
        response_format = body.get("response_format")
        if response_format and response_format.get("type") in self.refuse_formats:
            message = (
                "1 validation error: ('body', 'response_format', 'type') Input should be "
                f"'text' or 'json_object', got {response_format.get('type')!r}"
            )
            self._send_json(handler, 500, {"error": {"message": message}})
            return
        if self.delay_s:
            time.sleep(self.delay_s)
        text = self._chat_answer(prompt) if chat else self._completion_answer(prompt)
        self._send_json(handler, 200, self._envelope(text, chat, body.get("model", "")))

    def _send_fault(self, handler: BaseHTTPRequestHandler, fault: str) -> None:
        if fault == "stall":
            time.sleep(self.stall_s)
            self._send_json(handler, 500, {"error": {"message": "too late"}}, quiet=True)
        elif fault == "drop":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
        elif fault == "broken_json":
            payload = b'{"id": "cmpl-1", "object": "text_completion", "choices": [{"te'
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        elif fault == "http_500":
            self._send_json(handler, 500, {"error": {"message": "internal error"}})
        elif fault == "http_401_echo":  # like proxies that repeat the request's headers
            echoed = handler.headers.get("Authorization", "")
            message = f"invalid credentials; request had Authorization: {echoed}"
            self._send_json(handler, 401, {"error": {"message": message}})
        elif fault == "http_403":
            self._send_json(handler, 403, {"error": {"message": "model not allowed"}})
        else:
            self._send_json(handler, 401, {"error": {"message": "bad api key"}})

    @staticmethod
    def _send_json(
        handler: BaseHTTPRequestHandler, status: int, payload: Any, quiet: bool = False
    ) -> None:
        data = json.dumps(payload).encode("utf-8")
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            if not quiet:
                raise

    @staticmethod
    def _envelope(text: str, chat: bool, model: str) -> dict[str, Any]:
        usage = {"prompt_tokens": 10, "completion_tokens": max(1, len(text.split()))}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
            return {
                "id": "chat-1",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 0,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }

    # --- answers that follow the prompt --------------------------------------------------

    def _topics(self, item_header: str) -> tuple[str, str]:
        digest = _digest(item_header)
        topic = TOPICS[digest % len(TOPICS)]
        other = TOPICS[(digest // len(TOPICS) + 1 + digest) % len(TOPICS)]
        return topic, other if other != topic else TOPICS[(TOPICS.index(topic) + 1) % len(TOPICS)]

    def _value(self, key: str, header: str, written: dict[str, str]) -> str:
        topic, other = self._topics(header)
        if key in ("user_query", "input_text", "S1"):
            return f"what should I know about {topic} ({_digest(header) % 997})"
        if key in ("positive_document", "S2"):
            if any(rule in header for rule in self._copy_rules):
                with self._lock:
                    self.copied_queries += 1
                return f"Here is the answer to {written.get('user_query', '')} in full"
            return (
                f"{topic.capitalize()} explained: this guide covers what {topic} are, how "
                f"{topic} change over time and why {topic} matter to the people who study them."
            )
        if key == "label":
            return topic
        if key == "misleading_label":
            return other
        return f"A short note on {other}, with a passing mention of {topic} in its last line."

    @staticmethod
    def _judgement(prompt: str) -> str:
        """Relevance judge: the last passage decides (`RELEVANT` yes, `GARBLED` no JSON)."""
        passage = prompt.rsplit("Passage:", 1)[-1]
        if "GARBLED" in passage:
            return "I think it might be, hard to say"
        return "yes" if "RELEVANT" in passage else "no"

    def _completion_answer(self, prompt: str) -> str:
        if prompt.rstrip().endswith('{"relevant": "'):
            answer = self._judgement(prompt)
            return answer + '"}' if answer in ("yes", "no") else answer
        item = prompt.rsplit("\n\n", 1)[-1]
        header, _, json_part = item.partition("\n{")
        json_part = "{" + json_part
        if json_part.startswith('{"tasks": ["'):
            number = json_part.count('", "')
            topic = TOPICS[(_digest(header) + number) % len(TOPICS)]
            return f"Given a question about {topic}, retrieve articles that answer it"
        keys = _KEY_OPENING.findall(json_part)
        written = dict(re.findall(r'"([A-Za-z_0-9]+)": "((?:[^"\\]|\\.)*)"', json_part))
        return self._value(keys[-1], header, written)

    def _chat_answer(self, prompt: str) -> str:
        if '{"relevant": "yes"}' in prompt:
            answer = self._judgement(prompt.split("\n\nDoes the passage", 1)[0])
            return json.dumps({"relevant": answer}) if answer in ("yes", "no") else answer
        if "tasks" in prompt and "Propose" in prompt:
            count = int(re.search(r"Propose (\d+)", prompt).group(1))  # type: ignore[union-attr]
            tasks = [
                f"Given a question about {TOPICS[(_digest(prompt) + i) % len(TOPICS)]}, "
                "retrieve articles that answer it"
                for i in range(count)
            ]
            return json.dumps({"tasks": tasks})
        keys = re.findall(r'^- "([A-Za-z_0-9]+)":', prompt, flags=re.MULTILINE)
        answer: dict[str, str] = {}
        for key in keys:
            answer[key] = self._value(key, prompt, answer)
        return "Sure, here it is:\n```json\n" + json.dumps(answer) + "\n```"


class LlamaServer:
    """llama.cpp's OpenAI-compatible server on a GGUF, started and stopped by the test."""

    def __init__(self, model_path: Path, log_path: Path, *, threads: int = 1) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "embedcurate.pipeline.generation.embedded_backend",  # llama_cpp.server
                "--model",
                str(model_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--n_threads",
                str(threads),
                "--n_threads_batch",
                str(threads),
                "--n_ctx",
                "4096",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"llama.cpp server not ready after {timeout_s}s")

    def count_posts(self, path: str) -> int:
        """Calls the server logged (uvicorn's access log: `"POST /v1/completions HTTP/1.1"`)."""
        self._log.flush()
        return self.log_path.read_text(errors="replace").count(f'"POST {path} HTTP/1.1"')

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
