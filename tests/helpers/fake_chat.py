"""A fake OpenAI-compatible chat endpoint on 127.0.0.1 for tests: scripted failures first, then answers from a
function of the chat; it counts what it was asked."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeChat:
    """Serves POST /v1/chat/completions; `fail` lists status codes for the first requests (e.g. [500])."""

    def __init__(self, answer: Callable[[list[dict]], str], fail: list[int] | None = None,
                 headers: dict[str, str] | None = None):
        self.answer = answer
        self.fail = list(fail or [])
        self.headers = headers or {}
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with fake.lock:
                    fake.requests.append(body)
                    fake.auth.append(self.headers.get("Authorization"))
                    code = fake.fail.pop(0) if fake.fail else 200
                if self.path != "/v1/chat/completions":
                    code = 404
                if code != 200:
                    self.send_response(code)
                    for k, v in fake.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    return
                text = fake.answer(body["messages"])
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.timeout = 5
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FakeChat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
