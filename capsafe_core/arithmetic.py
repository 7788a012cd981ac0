"""A capability task a 135M model can learn on two CPU cores in minutes.

One-operation word problems: addition and subtraction within 20 and multiplication of 2–9
(a first version with results under 100 was too hard: a 135M model plateaued near 0.5 accuracy).
Each problem is an ``(op, a, b)`` triple dressed in one of several templates. The test split is a
seeded sample of triples; the train split never uses a test triple (checked in
:func:`train_split`), so no test problem is seen in training, whatever the wording. The target
answer format is ``"a op b = c. The answer is c."``, which the ``final_number`` scorer reads.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

NAMES = ["Tom", "Mia", "Sam", "Ana", "Leo", "Zoe", "Ben", "Ivy", "Max", "Eva", "Raj", "Lin"]
ITEMS = ["apples", "pencils", "marbles", "stickers", "books", "coins", "cards", "shells", "stamps", "cookies"]

TEMPLATES = {
    "+": [
        "{n} has {a} {x}. {n} gets {b} more {x}. How many {x} does {n} have now?",
        "A box holds {a} {x} and another box holds {b} {x}. How many {x} are there in total?",
        "{n} collected {a} {x} on Monday and {b} {x} on Tuesday. How many {x} did {n} collect?",
    ],
    "-": [
        "{n} has {a} {x} and gives away {b} of them. How many {x} are left?",
        "There were {a} {x} on a table. {n} took {b}. How many {x} are on the table now?",
        "{n} had {a} {x} and lost {b}. How many {x} does {n} have?",
    ],
    "*": [
        "{n} has {a} bags with {b} {x} in each bag. How many {x} does {n} have?",
        "There are {a} rows of {x} with {b} in each row. How many {x} are there?",
        "{n} buys {a} packs of {x}. Each pack has {b} {x}. How many {x} did {n} buy?",
    ],
}
SYMBOL = {"+": "+", "-": "-", "*": "×"}


@dataclass(frozen=True)
class Problem:
    ext_id: str
    op: str
    a: int
    b: int
    question: str

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b if self.op == "-" else self.a * self.b

    @property
    def target(self) -> str:
        """The response the task teaches."""
        return f"{self.a} {SYMBOL[self.op]} {self.b} = {self.answer}. The answer is {self.answer}."


def all_triples() -> list[tuple[str, int, int]]:
    triples = [("+", a, b) for a in range(1, 20) for b in range(1, 20) if a + b <= 20]
    triples += [("-", a, b) for a in range(2, 21) for b in range(1, a)]
    triples += [("*", a, b) for a in range(2, 10) for b in range(2, 10)]
    return triples


def _dress(triple: tuple[str, int, int], rng: random.Random, ext_id: str) -> Problem:
    op, a, b = triple
    text = rng.choice(TEMPLATES[op]).format(n=rng.choice(NAMES), x=rng.choice(ITEMS), a=a, b=b)
    return Problem(ext_id=ext_id, op=op, a=a, b=b, question=text)


def _test_triples(n: int, seed: int) -> list[tuple[str, int, int]]:
    rng = random.Random(seed)
    triples = all_triples()
    # 40% addition, 40% subtraction, 20% multiplication (64 triples: most stay for training)
    by_op = {op: [t for t in triples if t[0] == op] for op in "+-*"}
    chosen: list[tuple[str, int, int]] = []
    counts = {"+": round(n * 0.4), "-": round(n * 0.4)}
    counts["*"] = n - counts["+"] - counts["-"]
    for op in "+-*":
        chosen += rng.sample(by_op[op], counts[op])
    rng.shuffle(chosen)
    return chosen


def test_split(n: int = 100, *, seed: int = 0) -> list[Problem]:
    rng = random.Random(seed + 1)
    return [_dress(t, rng, f"arith20-test-{i:04d}") for i, t in enumerate(_test_triples(n, seed))]


def train_split(n: int = 3000, *, seed: int = 0, test_n: int = 100) -> list[Problem]:
    """``n`` training problems whose triples are disjoint from the test split's."""
    held_out = set(_test_triples(test_n, seed))
    pool = [t for t in all_triples() if t not in held_out]
    rng = random.Random(seed + 2)
    picked = [rng.choice(pool) for _ in range(n)]
    problems = [_dress(t, rng, f"arith20-train-{i:05d}") for i, t in enumerate(picked)]
    assert not {(p.op, p.a, p.b) for p in problems} & held_out
    return problems


def chat_examples(problems: list[Problem]) -> Iterator[list[dict[str, str]]]:
    """Training chats (``capsafe finetune`` reads them as ``{"messages": chat}`` JSONL lines)."""
    for p in problems:
        yield [{"role": "user", "content": p.question}, {"role": "assistant", "content": p.target}]
