"""Running a sweep: every checkpoint's missing generations, then every missing verdict, written through the
one store from this process whatever runs the models.

- ``local``: ``capsafe run``'s runner, one checkpoint after another.
- ``servers``: OpenAI-compatible servers (vLLM with ``--enable-lora``, llama.cpp, TGI, a hosted API); a
  checkpoint is a served model name and goes to a server that serves it (read from its ``/v1/models``), a
  thread per server with ``concurrency`` requests in flight. Each batch is written as it arrives; a server
  that stops answering is dropped and its checkpoint continues, from its stored batches on, on another
  server serving the same name.
- ``ray``: each checkpoint a Ray task (resources from the file) on an existing cluster or a local instance;
  tasks return completions and the driver writes them.

A checkpoint's work is computed from the store when it starts, so a rerun, or a checkpoint moved to
another server, generates only what is missing.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import polars as pl

from capsafe_core.backends import Completion
from capsafe_core.errors import BackendError, BadInput, ServerUnreachable
from capsafe_core.runner import RunSpec, run_checkpoint
from capsafe_core.runner.generation import (
    backend_options_of,
    checkpoint_prompts,
    generate_batches,
    judge_checkpoint,
    todo_of,
    write_batch,
    write_meta,
)
from capsafe_core.store import Store
from capsafe_core.sweep.plan import Sweep

EXECUTORS = ("local", "servers", "ray")
Event = Callable[[str, dict[str, Any]], None]


@dataclass
class SweepResult:
    checkpoints: int = 0
    generations_added: int = 0
    judgments_added: int = 0
    seconds: float = 0.0
    per_server: dict[str, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rate = self.generations_added / self.seconds if self.seconds else 0.0
        line = (
            f"Sweep done: {self.checkpoints} checkpoints, {self.generations_added:,} generations added "
            f"({rate:.1f}/s), {self.judgments_added:,} judgments added in {self.seconds:.1f} s"
        )
        if self.per_server:
            line += "; generations per server: " + ", ".join(f"{u} {n:,}" for u, n in self.per_server.items())
        if self.dropped:
            line += f"; servers dropped: {', '.join(self.dropped)}"
        return line


class Progress:
    """Checkpoints done of all, generations per second and the time left, one line per change."""

    def __init__(self, total: int, todo: int, enabled: bool) -> None:
        self.total, self.todo, self.enabled = total, todo, enabled
        self.done, self.generated, self.t0 = 0, 0, time.perf_counter()

    def add(self, generations: int = 0, checkpoints: int = 0) -> None:
        self.generated += generations
        self.done += checkpoints
        if not self.enabled:
            return
        rate = self.generated / max(time.perf_counter() - self.t0, 1e-9)
        left = max(self.todo - self.generated, 0)
        eta = f"{left / rate / 60:.1f} min" if rate > 0 else "?"
        print(
            f"[sweep] {self.done}/{self.total} checkpoints, {self.generated:,}/{self.todo:,} generations, "
            f"{rate:.1f}/s, ETA {eta}",
            file=sys.stderr,
        )


def plan_table(store: Store, sweep: Sweep) -> pl.DataFrame:
    """``--dry-run``: per checkpoint the prompts asked for, those stored and those to generate."""
    rows = []
    for spec in sweep.specs:
        _, prompts = checkpoint_prompts(spec)
        todo = todo_of(store, spec, prompts)
        rows.append(
            {"mitigation": spec.mitigation, "seed": spec.run_seed, "step": spec.step, "model": spec.model}
            | {"prompts": len(prompts), "stored": len(prompts) - len(todo), "to_generate": len(todo)}
        )
    return pl.DataFrame(rows)


def run(
    store: Store, sweep: Sweep, executor: str, *, progress: bool = True, on_event: Event | None = None
) -> SweepResult:
    """Run the sweep with ``executor``; returns what it added."""
    if executor not in EXECUTORS:
        raise BadInput(f"Unknown executor '{executor}'; use {', '.join(EXECUTORS)}")
    t0 = time.perf_counter()
    works = [(spec, *checkpoint_prompts(spec)) for spec in sweep.specs]
    todo = sum(len(todo_of(store, s, p)) for s, _, p in works)
    bar = Progress(len(works), todo, progress)
    result = SweepResult(checkpoints=len(works))
    event = on_event or (lambda kind, info: None)
    if executor == "local":
        for spec, _, _ in works:
            r = run_checkpoint(store, spec, progress=False)
            result.generations_added += r.generations_added
            result.judgments_added += r.judgments_added
            bar.add(r.generations_added, 1)
    else:
        states = _servers(store, sweep, works, bar, result, event) if executor == "servers" else _ray(
            store, sweep, works, bar, result
        )  # fmt: skip
        for i, (spec, names, prompts) in enumerate(works):
            state = states.get(i)
            if state is None:
                with store.transaction():
                    state = write_meta(store, spec, names, None)
            result.judgments_added += judge_checkpoint(store, spec, prompts, state, progress=False).judgments_added
    result.seconds = time.perf_counter() - t0
    return result


def _models(url: str) -> set[str] | None:
    """The model names a server serves (``None``: it cannot be reached)."""
    try:
        r = httpx.get(f"{url.rstrip('/')}/models", timeout=10.0)
        data = r.json().get("data", []) if r.status_code < 400 else None
        return {str(m.get("id")) for m in data if isinstance(m, dict)} if isinstance(data, list) else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def _servers(
    store: Store, sweep: Sweep, works: list[Any], bar: Progress, result: SweepResult, event: Event
) -> dict[int, dict[str, Any]]:
    from capsafe_core.backends.openai_compat import OpenAIBackend

    served = {u: m for u in sweep.servers if (m := _models(u)) is not None}
    if not sweep.servers:
        raise BadInput(f"{sweep.path}: --executor servers needs [servers] urls = [...]")
    if not served:
        raise BackendError(f"None of the servers answers at /v1/models: {', '.join(sweep.servers)}; start them")
    for spec, _, _ in works:
        if not any(spec.model in m for m in served.values()):
            names = ", ".join(sorted(set().union(*served.values())))
            raise BadInput(f"No server serves the model '{spec.model}' (served: {names}); serve it or fix the sweep")
    pending = list(range(len(works)))
    states: dict[int, dict[str, Any]] = {}
    busy: dict[str, tuple[int, Future[None]]] = {}
    out: queue.Queue[tuple[int, str, list[tuple[str, str]], list[Completion], dict[str, Any]]] = queue.Queue()
    stop = threading.Event()  # set on a fatal error: workers stop at their next batch

    def worker(url: str, i: int, todo: list[Any]) -> None:
        spec = works[i][0]
        backend = OpenAIBackend(spec.model, base_url=url, concurrency=sweep.server_concurrency,
                                timeout=spec.timeout, max_retries=spec.max_retries)  # fmt: skip
        for keys, outs in generate_batches(backend, spec, todo):
            out.put((i, url, keys, outs, backend.describe()))
            if stop.is_set():
                raise _Stopped

    pool = ThreadPoolExecutor(max_workers=len(served))
    try:
        while pending or busy:
            _assign(store, works, served, pending, busy, pool, worker, bar, event)
            if not busy:
                if pending:
                    left = sorted({works[j][0].model for j in pending})
                    raise BackendError(f"No server left that serves {', '.join(left)}; start one and rerun the sweep")
                break
            finished = [(u, i, f) for u, (i, f) in busy.items() if f.done()]
            _drain(store, works, out, states, bar, result, event, block=not finished)
            for url, i, fut in finished:
                del busy[url]
                err = fut.exception()
                if err is None:
                    bar.add(0, 1)
                    continue
                if not isinstance(err, ServerUnreachable):
                    raise err  # an answer it gave (a bad request) would recur on any server
                del served[url]
                result.dropped.append(url)
                event("dropped", {"server": url, "checkpoint": i, "error": str(err)})
                pending.insert(0, i)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        _drain(store, works, out, states, bar, result, event, block=False)  # keep what arrived
    return states


class _Stopped(Exception):
    """Raised in a worker after its batch is queued, once the sweep stops on an error."""


def _assign(
    store: Store,
    works: list[Any],
    served: dict[str, set[str]],
    pending: list[int],
    busy: dict[str, Any],
    pool: ThreadPoolExecutor,
    worker: Any,
    bar: Progress,
    event: Event,
) -> None:
    """Give each idle server the next pending checkpoint it serves that has something to generate."""
    for url in [u for u in served if u not in busy]:
        while True:
            i = next((j for j in pending if works[j][0].model in served[url]), None)
            if i is None:
                break
            pending.remove(i)
            todo = todo_of(store, works[i][0], works[i][2])
            if not todo:
                bar.add(0, 1)
                continue
            busy[url] = (i, pool.submit(worker, url, i, todo))
            event("start", {"server": url, "checkpoint": i})
            break


def _drain(store: Store, works: list[Any], out: queue.Queue[Any], states: dict[int, dict[str, Any]], bar: Progress,
           result: SweepResult, event: Event, *, block: bool) -> None:  # fmt: skip
    """Write every batch that has arrived (waiting a little for one where ``block``)."""
    while True:
        try:
            i, url, keys, outs, info = out.get(timeout=0.2) if block else out.get_nowait()
        except queue.Empty:
            return
        block = False
        spec, names, _ = works[i]
        with store.transaction():
            if i not in states:
                states[i] = write_meta(store, spec, names, info)
            write_batch(store, spec, states[i], keys, outs)
        result.generations_added += len(keys)
        result.per_server[url] = result.per_server.get(url, 0) + len(keys)
        bar.add(len(keys))
        event("batch", {"server": url, "checkpoint": i, "n": len(keys)})


def _remote_generate(spec: RunSpec, todo: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    """A Ray task: load the checkpoint's model where the task runs, generate, return plain tuples."""
    from capsafe_core.backends import load_backend

    backend = load_backend(spec.backend, model=spec.model, **backend_options_of(spec))
    try:
        got = [
            (k, o.text, o.n_tokens, o.finish_reason)
            for keys, outs in generate_batches(backend, spec, todo)
            for k, o in zip(keys, outs, strict=True)
        ]
        return got, backend.describe()
    finally:
        backend.close()


def _ray(store: Store, sweep: Sweep, works: list[Any], bar: Progress, result: SweepResult) -> dict[int, dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise BadInput("--executor ray needs Ray: pip install -e '.[ray]'") from None
    opts = {k: sweep.ray[k] for k in ("num_gpus", "num_cpus") if k in sweep.ray}
    if not ray.is_initialized():
        ray.init(address=sweep.ray.get("address"), include_dashboard=False, log_to_driver=False)
    task = ray.remote(_remote_generate).options(**opts)
    refs = {}
    for i, (spec, _, prompts) in enumerate(works):
        todo = todo_of(store, spec, prompts)
        if todo:
            refs[task.remote(spec, todo)] = i
        else:
            bar.add(0, 1)
    states: dict[int, dict[str, Any]] = {}
    failed: list[str] = []
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        i = refs.pop(ready[0])
        try:
            got, info = ray.get(ready[0])
        except Exception as e:  # one checkpoint's task failed: keep the others' results
            failed.append(f"{works[i][0].mitigation}/{works[i][0].run_seed}/{works[i][0].step}: {e}")
            continue
        spec, names, _ = works[i]
        with store.transaction():
            states[i] = write_meta(store, spec, names, info)
            write_batch(store, spec, states[i], [g[0] for g in got], [Completion(*g[1:]) for g in got])
        result.generations_added += len(got)
        bar.add(len(got), 1)
    if failed:
        raise BackendError(f"{len(failed)} checkpoint task(s) failed (the others are stored): {failed[0][:300]}")
    return states
