"""A client of any OpenAI-compatible chat endpoint (Ollama, vLLM, llama.cpp server, LM Studio, hosted APIs), with
the standard library only: a pool of threads, retries with exponential backoff, a time and request budget, and a
cache keyed by the prompt, so a rebuild never asks twice and a killed run resumes where it stopped."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from atlas.errors import ConfigError

Messages = list[dict[str, str]]
# Answers to these status codes are worth asking again; any other refusal is final for the request.
RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
# These mean the endpoint will refuse every request (address, model or key wrong): the client stops asking.
FATAL = {401, 403, 404}


@dataclass(frozen=True)
class EndpointSettings:
    """Where and how to ask: the [explain] section's endpoint settings with the API key read from its variable."""

    base_url: str
    model: str
    api_key: str = ""
    concurrency: int = 4
    max_retries: int = 4
    timeout_s: float = 60.0
    budget_s: float = 0.0  # 0: no limit
    max_requests: int = 0  # 0: no limit
    backoff_s: float = 1.0
    max_tokens: int = 256
    temperature: float = 0.0

    @classmethod
    def from_config(cls, section, environ=os.environ) -> "EndpointSettings":
        key = ""
        if section.api_key_env:
            key = environ.get(section.api_key_env, "")
            if not key:
                raise ConfigError(f"[explain] api_key_env names {section.api_key_env}, which is not set; export "
                                  f"{section.api_key_env}=<your key> or leave api_key_env empty for an endpoint "
                                  "that needs no key")
        return cls(section.base_url.rstrip("/"), section.model, key, max(1, section.concurrency),
                   section.max_retries, section.timeout_s, section.budget_s, section.max_requests)


@dataclass
class ClientStats:
    """What a client did: requests sent (retries included), answers from the cache, retries, failures."""

    requests: int = 0
    cached: int = 0
    answered: int = 0
    retries: int = 0
    failed: int = 0
    skipped: int = 0  # not asked: the budget was spent or the endpoint refused every request
    errors: list[str] = field(default_factory=list)


class PromptCache:
    """Answers on disk, one JSON file per prompt, named by the hash of the model and the request."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @staticmethod
    def key(model: str, messages: Messages, params: dict) -> str:
        payload = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, key: str) -> str | None:
        path = self.folder / key[:2] / f"{key}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))["answer"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, answer: str) -> None:
        path = self.folder / key[:2] / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"answer": answer}), encoding="utf-8")
        os.replace(tmp, path)


class ChatClient:
    """Asks the endpoint for chat completions within the settings' budget; cached answers cost nothing."""

    def __init__(self, settings: EndpointSettings, cache_dir: Path, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.cache = PromptCache(cache_dir)
        self.sleep, self.clock = sleep, clock
        self.started = clock()
        self.stats = ClientStats()
        self.fatal = ""
        self._lock = threading.Lock()

    def _params(self) -> dict:
        return {"temperature": self.settings.temperature, "max_tokens": self.settings.max_tokens}

    def _take(self) -> bool:
        """Reserve one request within the budget."""
        s = self.settings
        with self._lock:
            if self.fatal or (s.budget_s and self.clock() - self.started >= s.budget_s) \
                    or (s.max_requests and self.stats.requests >= s.max_requests):
                return False
            self.stats.requests += 1
            return True

    def _note(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)

    def _error(self, message: str, fatal: bool = False) -> None:
        with self._lock:
            if len(self.stats.errors) < 5:
                self.stats.errors.append(message)
            if fatal and not self.fatal:
                self.fatal = message

    def ask(self, messages: Messages) -> str | None:
        """The endpoint's answer to one chat, from the cache when it was asked before; None when the budget is
        spent or every try failed."""
        key = PromptCache.key(self.settings.model, messages, self._params())
        cached = self.cache.get(key)
        if cached is not None:
            self._note(cached=1)
            return cached
        for attempt in range(self.settings.max_retries + 1):
            if not self._take():
                self._note(skipped=1)
                return None
            try:
                answer = self._post(messages)
            except _Retry as exc:
                if attempt == self.settings.max_retries:
                    self._error(str(exc))
                    break
                self._note(retries=1)
                self.sleep(self._backoff(attempt, exc.after))
                continue
            except _Refused as exc:
                self._error(str(exc), fatal=exc.fatal)
                break
            self.cache.put(key, answer)
            self._note(answered=1)
            return answer
        self._note(failed=1)
        return None

    def ask_all(self, chats: list[Messages]) -> list[str | None]:
        """Answers to many chats in the order given, `concurrency` at a time; the earliest are asked first, so what
        the budget leaves out is the end of the list."""
        if not chats:
            return []
        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            return list(pool.map(self.ask, chats))

    def _backoff(self, attempt: int, after: float | None) -> float:
        wait = after if after is not None else self.settings.backoff_s * 2 ** attempt
        if self.settings.budget_s:
            wait = min(wait, max(0.0, self.settings.budget_s - (self.clock() - self.started)))
        return max(0.0, min(wait, 60.0))

    def _post(self, messages: Messages) -> str:
        s = self.settings
        body = json.dumps({"model": s.model, "messages": messages, **self._params()}).encode()
        headers = {"Content-Type": "application/json"}
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        request = urllib.request.Request(f"{s.base_url}/chat/completions", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=s.timeout_s) as response:
                raw = response.read(4 << 20)
        except urllib.error.HTTPError as exc:
            after = exc.headers.get("Retry-After") if exc.headers else None
            message = f"{s.base_url}: HTTP {exc.code} {exc.reason}"
            if exc.code in RETRYABLE:
                raise _Retry(message, _seconds(after)) from None
            raise _Refused(message + _hint(exc.code), fatal=exc.code in FATAL) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            raise _Retry(f"{s.base_url}: {getattr(exc, 'reason', exc)}", None) from None
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Refused(f"{s.base_url}: the answer is not a chat completion", fatal=False) from None
        if not isinstance(content, str):
            raise _Refused(f"{s.base_url}: the answer's content is not text", fatal=False)
        return content


class _Retry(Exception):
    def __init__(self, message: str, after: float | None):
        super().__init__(message)
        self.after = after


class _Refused(Exception):
    def __init__(self, message: str, fatal: bool):
        super().__init__(message)
        self.fatal = fatal


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _hint(code: int) -> str:
    return {401: " (check the key in the variable [explain] api_key_env names)",
            403: " (the key may not be allowed this model)",
            404: " (check [explain] base_url, which usually ends in /v1, and model)"}.get(code, "")
