"""Capability scorers: ``correct`` / ``incorrect`` against the prompt's reference."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from capsafe_core.evaluators.base import Evaluator, Item, Verdict, evaluator

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_LETTER = re.compile(r"(?:answer\s*(?:is|:)\s*\(?([A-J])\)?)|(?:^\s*\(?([A-J])[\).:\s])", re.IGNORECASE | re.MULTILINE)


def _to_number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").rstrip("."))
    except ValueError:
        return None


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (commas and a trailing period allowed)."""
    found = _NUMBER.findall(text)
    return _to_number(found[-1]) if found else None


def _verdict(ok: bool, explanation: str) -> Verdict:
    return Verdict("correct" if ok else "incorrect", 1.0 if ok else 0.0, explanation)


def _missing_reference() -> Verdict:
    return Verdict("unparsed", None, "the prompt has no reference answer")


@evaluator(
    name="final_number",
    kind="capability",
    version="1",
    description="the last number in the response equals the reference (GSM8K style)",
    applies_to=("capability",),
)
def final_number() -> Evaluator:
    """GSM8K-style: the response's last number equals the reference's number."""

    def run(items: Sequence[Item]) -> list[Verdict]:
        out = []
        for it in items:
            want = last_number(it.reference or "")
            if want is None:
                out.append(_missing_reference())
                continue
            got = last_number(it.response)
            ok = got is not None and abs(got - want) < 1e-9
            out.append(_verdict(ok, f"last number {got if got is not None else 'none'}; reference {want:g}"))
        return out

    return run


@evaluator(
    name="exact_match",
    kind="capability",
    version="1",
    description="the stripped, case-folded response equals the reference",
    applies_to=("capability",),
    default=False,
)
def exact_match() -> Evaluator:
    return _against_reference(lambda response, ref: response.strip().casefold() == ref.strip().casefold())


@evaluator(
    name="contains_match",
    kind="capability",
    version="1",
    description="the reference occurs in the response (case-folded)",
    applies_to=("capability",),
    default=False,
)
def contains_match() -> Evaluator:
    return _against_reference(lambda response, ref: ref.strip().casefold() in response.casefold())


def _against_reference(match: Callable[[str, str], bool]) -> Evaluator:
    """An evaluator that compares each response with its reference by ``match(response, reference)``."""

    def run(items: Sequence[Item]) -> list[Verdict]:
        return [
            _verdict(match(it.response, it.reference), f"reference {it.reference!r}")
            if it.reference is not None
            else _missing_reference()
            for it in items
        ]

    return run


def picked_letter(text: str) -> str | None:
    m = _LETTER.search(text)
    if not m:
        return None
    return (m.group(1) or m.group(2)).upper()


@evaluator(
    name="mc_letter",
    kind="capability",
    version="1",
    description="the multiple-choice letter the response picks equals the reference",
    applies_to=("capability",),
    default=False,
)
def mc_letter() -> Evaluator:
    """The multiple-choice letter picked ("The answer is (B)", or a leading "B.") equals the reference."""

    def run(items: Sequence[Item]) -> list[Verdict]:
        out = []
        for it in items:
            if not it.reference:
                out.append(_missing_reference())
                continue
            got = picked_letter(it.response)
            out.append(_verdict(got == it.reference.strip().upper(), f"picked {got}; reference {it.reference}"))
        return out

    return run
