"""A stand-in for an OpenAI-compatible chat endpoint: a real HTTP server on a free port that
records every request and answers in the chat-completions protocol (or fails as told).

No real OpenAI is reachable from these machines; what the composer depends on is the protocol
(``POST {base}/chat/completions``, bearer key, ``choices[0].message.content``), which this
speaks over a real socket.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = "Standard parcels take three to five working days [1]."

# Modes: "ok" answers ANSWER; "unauthorized" answers 401 with an OpenAI-style error that echoes
# the key it refused (OpenAI's does, partly masked); "slow" answers after ``delay_s``;
# "garbage" answers 200 with a body that is not a chat completion; "empty" a completion with
# no text.
MODES = ("ok", "unauthorized", "slow", "garbage", "empty")


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class ChatServer:
    mode: str = "ok"
    delay_s: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""  # base URL, ".../v1"

    @property
    def last(self) -> Recorded:
        return self.requests[-1]


def _handler(state: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            state.requests.append(Recorded(self.path, dict(self.headers.items()), json.loads(raw or b"{}")))
            if self.path != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            mode = state.mode
            if mode == "unauthorized":
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                return self._send(401, {"error": {"message": f"Incorrect API key provided: {key}.",
                                                  "type": "invalid_request_error", "code": "invalid_api_key"}})
            if mode == "slow":
                time.sleep(state.delay_s)
            if mode == "garbage":
                return self._send(200, {"unexpected": True})
            content = "" if mode == "empty" else ANSWER
            self._send(200, {
                "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                "model": state.requests[-1].body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            })

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the "slow" mode)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
            pass

    return Handler


@contextmanager
def chat_server() -> Iterator[ChatServer]:
    state = ChatServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, name="chat-stand-in", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
