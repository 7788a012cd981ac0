"""Training data: chat files, the overlap check against evaluation benchmarks, safety mixing, tokenised
chats (loss on the assistant's tokens only) and their collation."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from capsafe_core import benchmarks
from capsafe_core.errors import BadInput
from capsafe_core.finetune.presets import Chat
from capsafe_core.jsonl import read_lines


def read_chat_jsonl(path: str | Path) -> list[Chat]:
    """Rows of ``{"messages": [{"role", "content"}, ...]}`` (or ``prompt``/``response`` pairs)."""
    p = Path(path)
    if not p.exists():
        raise BadInput(f"No training file {p}; pass a JSONL of chat turns")
    out: list[Chat] = []
    for i, row in read_lines(p.read_text(encoding="utf-8"), p.name):
        if isinstance(row, dict) and "messages" in row:
            msgs = row["messages"]
        elif isinstance(row, dict) and "prompt" in row and "response" in row:
            msgs = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["response"]}]
        else:
            raise BadInput(
                f"{p.name} line {i} has neither 'messages' nor 'prompt'/'response'; see capsafe finetune --help"
            )
        if not msgs or msgs[-1].get("role") != "assistant" or not all("content" in m for m in msgs):
            raise BadInput(f"{p.name} line {i}: the last message must be the assistant's answer")
        out.append(msgs)
    if not out:
        raise BadInput(f"{p.name} has no training examples")
    return out


def user_texts(chats: Sequence[Chat]) -> list[str]:
    return [m["content"] for c in chats for m in c if m["role"] == "user"]


def check_no_overlap(chats: Sequence[Chat], eval_benchmarks: Sequence[str]) -> None:
    """Refuse training data whose prompts appear (normalised) in an evaluation benchmark."""
    train = {benchmarks.normalize_text(t) for t in user_texts(chats)}
    for name in benchmarks.expand(list(eval_benchmarks)):
        hits = [p for p in benchmarks.load(name) if benchmarks.normalize_text(p.text) in train]
        if hits:
            raise BadInput(
                f"{len(hits)} training prompt(s) are also in the evaluation benchmark '{name}' "
                f"(e.g. {hits[0].ext_id}: {hits[0].text[:60]!r}); remove them from the training data"
            )


def drop_overlap(chats: Sequence[Chat], eval_benchmarks: Sequence[str]) -> list[Chat]:
    """The chats whose user turns appear in no evaluation benchmark."""
    held = {
        benchmarks.normalize_text(p.text) for n in benchmarks.expand(list(eval_benchmarks)) for p in benchmarks.load(n)
    }
    return [c for c in chats if not any(benchmarks.normalize_text(t) in held for t in user_texts([c]))]


def mix(task: Sequence[Chat], safety: Sequence[Chat], share: float, *, seed: int) -> list[Chat]:
    """Task examples with safety examples making up ``share`` of the result, shuffled."""
    if share <= 0:
        return list(task)
    if not safety:
        raise BadInput("The safety_mix mitigation needs safety examples; pass --safety-data FILE")
    n = round(len(task) * share / (1 - share))
    rng = random.Random(seed)
    picked = [safety[i % len(safety)] for i in rng.sample(range(max(n, len(safety))), n)] if n else []
    out = list(task) + picked
    rng.shuffle(out)
    return out


class ChatDataset:
    """Tokenised chats; only assistant tokens are trained on (the rest is label -100)."""

    def __init__(self, chats: Sequence[Chat], tokenizer: Any, max_length: int):
        self.rows = [self._encode(c, tokenizer, max_length) for c in chats]

    @staticmethod
    def _encode(chat: Chat, tok: Any, max_length: int) -> dict[str, list[int]]:
        prefix = tok.apply_chat_template(chat[:-1], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(chat, tokenize=False)
        p_ids = tok(prefix, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"][:max_length]
        labels = [-100] * min(len(p_ids), len(ids)) + ids[len(p_ids) :]
        return {"input_ids": ids, "labels": labels}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


def collate(pad_id: int) -> Any:
    import torch

    def fn(rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return fn
