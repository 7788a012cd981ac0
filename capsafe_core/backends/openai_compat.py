"""The OpenAI-compatible backend: chat completions from vLLM, TGI, llama.cpp, or any such server.

This is how capsafe scales beyond one machine: point it at a vLLM server (tensor/pipeline
parallel; with ``--enable-lora`` one server serves many adapter checkpoints, each by its adapter
name as ``--model``). Requests run concurrently up to ``concurrency``; each has a timeout and is
retried with exponential backoff on connection errors, 429 and 5xx. A server error or a final
timeout raises ``BackendError`` with the server's own message; nothing is returned partially.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from capsafe_core.backends import Completion, Decoding, Message
from capsafe_core.errors import BackendError, ServerUnreachable

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 3,
    ) -> None:
        self.model = str(model)
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.server_models = self._ping()

    def _ping(self) -> list[str]:
        """Fail early, before anything is written, if the server cannot be reached."""
        try:
            r = httpx.get(f"{self.base_url}/models", headers=self.headers, timeout=10.0)
        except httpx.TransportError as e:
            raise ServerUnreachable(
                f"Cannot reach an OpenAI-compatible server at {self.base_url} ({type(e).__name__}); "
                f"start the server or fix --base-url"
            ) from None
        if r.status_code >= 500:  # failing or overloaded: as good as down (another server may take the work)
            raise ServerUnreachable(f"{self.base_url}/models answered HTTP {r.status_code}: {_server_message(r)}")
        if r.status_code >= 400:
            raise BackendError(f"{self.base_url}/models answered HTTP {r.status_code}: {_server_message(r)}")
        try:
            return [m.get("id", "") for m in r.json().get("data", [])]
        except ValueError:
            return []

    def generate(self, prompts: list[list[Message]], decoding: Decoding, *, top_logprobs: int = 0) -> list[Completion]:
        return asyncio.run(self._generate_all(prompts, decoding, top_logprobs))

    async def _generate_all(
        self, prompts: list[list[Message]], decoding: Decoding, top_logprobs: int
    ) -> list[Completion]:
        sem = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout, headers=self.headers) as client:

            async def one(i: int, msgs: list[Message]) -> Completion:
                async with sem:
                    return await self._complete(client, msgs, decoding, top_logprobs, seed=decoding.seed + i)

            tasks = [asyncio.create_task(one(i, m)) for i, m in enumerate(prompts)]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for t in tasks:
                    t.cancel()
                raise

    async def _complete(
        self, client: httpx.AsyncClient, msgs: list[Message], decoding: Decoding, top_logprobs: int, *, seed: int
    ) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": msgs,
            "max_tokens": decoding.max_new_tokens,
            "temperature": decoding.temperature,
            "top_p": decoding.top_p,
        }
        if not decoding.greedy:
            body["seed"] = seed
        if top_logprobs:
            body.update(logprobs=True, top_logprobs=top_logprobs)
        url = f"{self.base_url}/chat/completions"
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                r = await client.post(url, json=body)
            except httpx.TimeoutException:
                if last:
                    raise ServerUnreachable(
                        f"{url} did not answer within {self.timeout:g} s after {attempt + 1} tries; "
                        f"raise --timeout or check the server's load"
                    ) from None
            except httpx.TransportError as e:
                if last:
                    raise ServerUnreachable(
                        f"Lost the connection to {url} ({type(e).__name__}); is the server up?"
                    ) from None
            else:
                if r.status_code < 400:
                    return _parse(r, url)
                if r.status_code not in RETRY_STATUS:
                    raise BackendError(f"{url} answered HTTP {r.status_code}: {_server_message(r)}")
                if last:  # overloaded or failing after every retry: as good as down
                    raise ServerUnreachable(f"{url} answered HTTP {r.status_code}: {_server_message(r)}")
            await asyncio.sleep(min(8.0, 0.5 * 2**attempt) * (1 + random.random() / 4))
        raise AssertionError("unreachable")

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model,
            "base_url": self.base_url,
            "server_models": self.server_models[:20],
            "versions": {"httpx": httpx.__version__},
        }

    def close(self) -> None:
        pass


def _server_message(r: httpx.Response) -> str:
    try:
        data = r.json()
        err = data.get("error", data)
        msg = err.get("message") if isinstance(err, dict) else err
        return str(msg or data)[:300]
    except ValueError:
        return r.text[:300] or r.reason_phrase


def _parse(r: httpx.Response, url: str) -> Completion:
    try:
        data = r.json()
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise BackendError(f"{url} answered something that is not a chat completion: {r.text[:200]!r}") from None
    usage = data.get("usage") or {}
    logprobs = None
    content = (choice.get("logprobs") or {}).get("content")
    if content:
        logprobs = [{t["token"]: t["logprob"] for t in (c.get("top_logprobs") or [])} for c in content]
    return Completion(
        text=text, n_tokens=usage.get("completion_tokens"), finish_reason=choice.get("finish_reason"), logprobs=logprobs
    )
