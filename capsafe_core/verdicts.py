"""Outside values (1/0, true/false, yes/no, safe/unsafe, XSTest codes, ...) normalised into the verdict
vocabulary of ``capsafe_core.vocabulary``, which says what each label means. An unrecognised value is an
error, never a guess.
"""

from __future__ import annotations

from collections.abc import Iterable

from capsafe_core.errors import BadInput
from capsafe_core.vocabulary import HUMAN_LABELS, KINDS, LABELS, PAGE_LABELS, UNPARSED

_TRUE = {"1", "1.0", "true", "t", "yes", "y"}
_FALSE = {"0", "0.0", "false", "f", "no", "n"}
_UNPARSED = {"_1", "_1.0", "unparsed", "error", "unparseable", "unknown"}

# Kind-specific words. Booleans mean "the event the kind is named after happened":
# harm → unsafe, refusal → refusal, capability → correct, coherence → coherent.
_SYNONYMS: dict[str, dict[str, str]] = {
    "harm": {
        "unsafe": "unsafe",
        "harmful": "unsafe",
        "jailbroken": "unsafe",
        "violating": "unsafe",
        "safe": "safe",
        "harmless": "safe",
        "not_jailbroken": "safe",
        "benign": "safe",
    },
    "refusal": {
        "refusal": "refusal",
        "refused": "refusal",
        "refuse": "refusal",
        "full_refusal": "refusal",
        "2_full_refusal": "refusal",
        "partial_refusal": "partial_refusal",
        "partial": "partial_refusal",
        "3_partial_refusal": "partial_refusal",
        "compliance": "compliance",
        "complied": "compliance",
        "comply": "compliance",
        "full_compliance": "compliance",
        "1_full_compliance": "compliance",
    },
    "capability": {
        "correct": "correct",
        "c": "correct",
        "pass": "correct",
        "passed": "correct",
        "right": "correct",
        "incorrect": "incorrect",
        "i": "incorrect",
        "fail": "incorrect",
        "failed": "incorrect",
        "wrong": "incorrect",
    },
    "coherence": {"coherent": "coherent", "incoherent": "incoherent"},
}
_BOOL_LABEL = {
    "harm": ("unsafe", "safe"),
    "refusal": ("refusal", "compliance"),
    "capability": ("correct", "incorrect"),
    "coherence": ("coherent", "incoherent"),
}


def _key(value: object) -> str:
    return str(value).strip().lower().replace(" ", "_").replace("-", "_") if value is not None else ""


def normalize_label(value: object, kind: str, *, column: str = "") -> tuple[str, float | None]:
    """Map an outside verdict to ``(label, score)`` in the vocabulary of ``kind``.

    Raises ``BadInput`` naming the value and column for anything it does not recognise.
    """
    if kind not in LABELS:
        raise BadInput(f"Unknown evaluator kind '{kind}'; use one of: {', '.join(KINDS)}")
    key = _key(value)
    raw = str(value).strip()
    if key in _UNPARSED:
        return UNPARSED, None
    if key in _SYNONYMS[kind]:
        return _SYNONYMS[kind][key], None
    pos, neg = _BOOL_LABEL[kind]
    if key in _TRUE:
        return pos, None
    if key in _FALSE:
        return neg, None
    if kind in ("capability", "harm", "coherence"):
        try:
            x = float(raw)
        except ValueError:
            x = None
        if x is not None and 0.0 <= x <= 1.0:
            # partial credit / a harmfulness or coherence score: label by the midpoint
            return (pos if x >= 0.5 else neg), x
    where = f" in column '{column}'" if column else ""
    allowed = sorted(set(_SYNONYMS[kind].values())) + ["1/0", "true/false", "yes/no", UNPARSED]
    raise BadInput(
        f"Unrecognised {kind} verdict '{raw}'{where}; use one of: {', '.join(allowed)} "
        f"(or pass --judge-kind NAME=KIND if the column is of another kind)"
    )


def infer_kind(values: Iterable[object], *, column: str = "") -> str:
    """The kind whose vocabulary the values use; booleans alone mean ``harm`` (1 = unsafe).

    That default follows HarmBench (`label` 1 = harmful) and JailbreakBench (`jailbroken`).
    """
    seen: set[str] = set()
    for v in values:
        k = _key(v)
        if not k or k in _TRUE or k in _FALSE or k in _UNPARSED:
            continue
        kinds = {kind for kind, words in _SYNONYMS.items() if k in words}
        if not kinds:
            try:
                float(k)
                continue
            except ValueError:
                pass
            where = f" in column '{column}'" if column else ""
            raise BadInput(
                f"Unrecognised verdict '{v}'{where}; use a value of the capsafe vocabulary "
                f"(unsafe/safe, refusal/partial_refusal/compliance, correct/incorrect, coherent/incoherent, 1/0)"
            )
        seen |= kinds
    if len(seen) > 1:
        where = f"Column '{column}'" if column else "The values"
        raise BadInput(
            f"{where} mixes verdicts of kinds {', '.join(sorted(seen))}; pass --judge-kind NAME=KIND to say which it is"
        )
    return seen.pop() if seen else "harm"


def normalize_human_label(value: object, *, column: str = "") -> str | None:
    """A person's verdict in the page vocabulary or the dimension of its source; ``None`` for empty."""
    key = _key(value)
    if not key or key in {"none", "null", "nan"}:
        return None
    if key in PAGE_LABELS:
        return key
    for kind in ("refusal", "harm"):
        if key in _SYNONYMS[kind]:
            return _SYNONYMS[kind][key]
    if key in _TRUE:
        return "unsafe"
    if key in _FALSE:
        return "safe"
    where = f" in column '{column}'" if column else ""
    raise BadInput(
        f"Unrecognised human label '{value}'{where}; use harmful/refusal/benign, unsafe/safe, "
        f"refusal/partial_refusal/compliance or 1/0"
    )


def normalize_bool(value: object, *, column: str = "") -> bool | None:
    """``yes``/``no`` style flags (e.g. a human's coherent judgement); ``None`` for empty."""
    key = _key(value)
    if not key or key in {"none", "null", "nan"}:
        return None
    if key in _TRUE or key == "coherent":
        return True
    if key in _FALSE or key == "incoherent":
        return False
    where = f" in column '{column}'" if column else ""
    raise BadInput(f"Unrecognised yes/no value '{value}'{where}; use 1/0, true/false or yes/no")


__all__ = [
    "HUMAN_LABELS",
    "KINDS",
    "LABELS",
    "PAGE_LABELS",
    "UNPARSED",
    "infer_kind",
    "normalize_bool",
    "normalize_human_label",
    "normalize_label",
]
