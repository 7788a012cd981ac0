"""``capsafe import table``: results in CSV, JSONL or Parquet, mapped column by column.

``--map FIELD=COLUMN`` and ``--set FIELD=VALUE`` fill the fields of a generation; a column named
like a field is used without a ``--map``. ``--map judge:NAME=COLUMN`` reads verdicts of evaluator
NAME (``score:NAME=COLUMN`` and ``explanation:NAME=COLUMN`` add its score and explanation), and
``--map human:ANNOTATOR=COLUMN`` reads a person's labels (``human_coherent:`` and ``human_note:``
add their coherence flag and note). Verdicts are normalised to the capsafe vocabulary; an unknown
value is an error, never a guess.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from capsafe_core import evaluators, verdicts
from capsafe_core.errors import BadInput
from capsafe_core.importers.records import ImportResult, write_records
from capsafe_core.jsonl import read_lines
from capsafe_core.store import Store

FIELDS = (
    "experiment",
    "mitigation",
    "seed",
    "step",
    "model",
    "benchmark",
    "prompt_id",
    "prompt",
    "category",
    "reference",
    "response",
    "sample",
)
PREFIXES = ("judge", "score", "explanation", "human", "human_coherent", "human_note")
DEFAULTS = {"mitigation": "none", "seed": "0", "step": "0"}


@dataclass(frozen=True)
class TableMapping:
    """Where each field comes from: a column (``columns``) or a constant (``constants``)."""

    columns: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    judges: dict[str, dict[str, str]] = field(default_factory=dict)  # prefix -> {name: column}
    judge_kinds: dict[str, str] = field(default_factory=dict)
    judge_version: str = "imported"
    benchmark_kind: str | None = None  # None: capability where every verdict is a capability verdict, else safety


def _split_pair(item: str, flag: str) -> tuple[str, str]:
    if "=" not in item:
        raise BadInput(f"{flag} '{item}' is not of the form FIELD=VALUE; e.g. {flag} response=output")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def parse_mapping(
    maps: Sequence[str] = (),
    sets: Sequence[str] = (),
    judge_kinds: Sequence[str] = (),
    *,
    judge_version: str = "imported",
    benchmark_kind: str | None = None,
) -> TableMapping:
    columns: dict[str, str] = {}
    judges: dict[str, dict[str, str]] = {p: {} for p in PREFIXES}
    for item in maps:
        key, col = _split_pair(item, "--map")
        if ":" in key:
            prefix, name = key.split(":", 1)
            if prefix not in PREFIXES or not name:
                raise BadInput(
                    f"--map '{item}': unknown prefix '{prefix}'; use {', '.join(p + ':NAME' for p in PREFIXES)}"
                )
            judges[prefix][name] = col
        elif key in FIELDS:
            columns[key] = col
        else:
            raise BadInput(f"--map '{item}': unknown field '{key}'; use one of: {', '.join(FIELDS)}")
    constants: dict[str, str] = {}
    for item in sets:
        key, value = _split_pair(item, "--set")
        if key not in FIELDS:
            raise BadInput(f"--set '{item}': unknown field '{key}'; use one of: {', '.join(FIELDS)}")
        constants[key] = value
    kinds: dict[str, str] = {}
    for item in judge_kinds:
        name, kind = _split_pair(item, "--judge-kind")
        if kind not in verdicts.KINDS:
            raise BadInput(f"--judge-kind '{item}': unknown kind '{kind}'; use one of: {', '.join(verdicts.KINDS)}")
        kinds[name] = kind
    if benchmark_kind not in (None, "safety", "overrefusal", "capability"):
        raise BadInput(f"Unknown benchmark kind '{benchmark_kind}'; use safety, overrefusal or capability")
    return TableMapping(
        columns, constants, {k: v for k, v in judges.items() if v}, kinds, judge_version, benchmark_kind
    )


def _kinds(gens: pl.DataFrame, judgments: pl.DataFrame | None) -> dict[str, str]:
    """Per benchmark: ``capability`` when every verdict on it is a capability verdict, else ``safety``."""
    if judgments is None or judgments.height == 0:
        return {}
    kinds = (
        judgments.join(gens.select("row", "benchmark"), on="row")
        .group_by("benchmark")
        .agg((pl.col("kind") == "capability").all().alias("capability"))
    )
    return {str(b): "capability" if c else "safety" for b, c in kinds.iter_rows()}


# --- reading -----------------------------------------------------------------------------


def _decode(data: bytes, path: Path) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise BadInput(
            f"{path.name} line {line} is not UTF-8 (byte 0x{data[e.start]:02x}); re-save the file as UTF-8"
        ) from None


def as_text(value: Any) -> str | None:
    """A cell as text: strings as they are, lists and objects as JSON with every item, other values
    as JSON scalars (``true``, ``1.5``)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _binary_text(values: pl.Series, path: Path) -> pl.Series:
    out = []
    for i, v in enumerate(values.to_list(), start=1):
        try:
            out.append(None if v is None else bytes(v).decode("utf-8"))
        except UnicodeDecodeError:
            raise BadInput(
                f"{path.name} row {i}, column '{values.name}': the value is not UTF-8 text; re-export the column "
                f"as UTF-8 strings"
            ) from None
    return pl.Series(values.name, out, dtype=pl.Utf8)


def _stringify(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Every column as text; nested values (lists, structs) as JSON with every item."""
    cols = []
    for name, dtype in frame.schema.items():
        if dtype.is_nested():
            cols.append(pl.Series(name, [as_text(v) for v in frame[name].to_list()], dtype=pl.Utf8))
        elif dtype == pl.Binary:
            cols.append(_binary_text(frame[name], path))
        else:
            cols.append(frame[name].cast(pl.Utf8))
    return pl.DataFrame(cols)


def _read_jsonl(data: bytes, path: Path) -> pl.DataFrame:
    """JSON Lines read value by value, so that no type is inferred across rows (``1`` stays ``1``,
    an object keeps exactly its own keys)."""
    rows = []
    for i, obj in read_lines(data.decode("utf-8"), path.name):
        if not isinstance(obj, dict):
            raise BadInput(f"{path.name} line {i} is not a JSON object; each line must be one {{...}} record")
        rows.append({k: as_text(v) for k, v in obj.items()})
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return pl.DataFrame({c: [r.get(c) for r in rows] for c in columns}, schema=dict.fromkeys(columns, pl.Utf8))


def _read_csv(data: bytes, path: Path, sep: str) -> pl.DataFrame:
    try:
        return pl.read_csv(io.BytesIO(data), separator=sep, infer_schema=False, raise_if_empty=True)
    except pl.exceptions.NoDataError:
        raise BadInput(f"{path.name} is empty; a CSV file needs a header row and data rows") from None
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(
            f"{path.name} is not a well-formed CSV file ({first}); check its quoting and column count"
        ) from None


def read_table(path: str | Path) -> pl.DataFrame:
    """A CSV/TSV, JSONL or Parquet file as a frame of text columns."""
    p = Path(path)
    if not p.exists():
        raise BadInput(f"No file {p}; check the path")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        try:
            frame = pl.read_parquet(p)
        except Exception as e:
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise BadInput(f"{p.name} is not a readable Parquet file ({detail}); re-export it") from None
        if frame.height == 0:
            raise BadInput(f"{p.name} has no data rows")
        return _stringify(frame, p)
    if suffix not in (".csv", ".tsv", ".jsonl", ".ndjson"):
        raise BadInput(f"Unsupported file type '{suffix}' for {p.name}; use .csv, .tsv, .jsonl or .parquet")
    data = p.read_bytes()
    _decode(data, p)
    frame = (
        _read_jsonl(data, p)
        if suffix in (".jsonl", ".ndjson")
        else _read_csv(data, p, "\t" if suffix == ".tsv" else ",")
    )
    if frame.height == 0:
        raise BadInput(f"{p.name} has no data rows")
    return _stringify(frame, p)


# --- mapping -----------------------------------------------------------------------------


def _column(frame: pl.DataFrame, col: str, what: str, path: Path) -> pl.Expr:
    if col not in frame.columns:
        raise BadInput(
            f"{path.name} has no column '{col}' (mapped to {what}); its columns are: {', '.join(frame.columns)}"
        )
    return pl.col(col)


def _empty_to_null(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr.str.strip_chars() == "").then(None).otherwise(expr)


def build_records(
    frame: pl.DataFrame, mapping: TableMapping, path: Path
) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame | None]:
    """Turn the file's rows into the normalised generation, judgment and human frames."""
    return _generations(frame, mapping, path), _judgments(frame, mapping, path), _humans(frame, mapping, path)


def _generations(frame: pl.DataFrame, mapping: TableMapping, path: Path) -> pl.DataFrame:
    exprs: list[pl.Expr | pl.Series] = [pl.Series("row", range(1, frame.height + 1), dtype=pl.Int64)]
    for f in FIELDS:
        if f in mapping.constants:
            expr = pl.lit(mapping.constants[f], dtype=pl.Utf8)
        elif f in mapping.columns:
            expr = _empty_to_null(_column(frame, mapping.columns[f], f, path))
        elif f in frame.columns:
            expr = _empty_to_null(pl.col(f))
        elif f == "experiment" or f == "benchmark":
            expr = pl.lit(path.stem, dtype=pl.Utf8)
        else:
            expr = pl.lit(DEFAULTS.get(f), dtype=pl.Utf8)
        exprs.append(expr.alias(f))
    gens = frame.select(exprs)
    for f in ("seed", "step", "sample"):
        bad = gens.filter(pl.col(f).is_not_null() & pl.col(f).cast(pl.Int64, strict=False).is_null())
        if bad.height:
            raise BadInput(
                f"Row {bad['row'][0]}: {f} '{bad[f][0]}' is not a whole number; map {f} to an integer column"
            )
    gens = gens.with_columns(pl.col(f).cast(pl.Int64) for f in ("seed", "step", "sample"))
    gens = gens.with_columns(pl.lit(json.dumps({"source": "import"})).alias("decoding"))
    return gens


def _judgments(frame: pl.DataFrame, mapping: TableMapping, path: Path) -> pl.DataFrame | None:
    judgment_frames = []
    for name, col in mapping.judges.get("judge", {}).items():
        values = frame[_column_name(frame, col, f"judge:{name}", path)]
        kind = (
            mapping.judge_kinds.get(name)
            or _registered_kind(name)
            or verdicts.infer_kind(values.drop_nulls().unique().to_list(), column=col)
        )
        labels, score_list = _normalise(values, kind, col)
        scores = pl.Series(score_list, dtype=pl.Float64)
        score_col = mapping.judges.get("score", {}).get(name)
        if score_col is not None:
            scores = frame[_column_name(frame, score_col, f"score:{name}", path)].cast(pl.Float64, strict=False)
        expl_col = mapping.judges.get("explanation", {}).get(name)
        expl = (
            frame[_column_name(frame, expl_col, f"explanation:{name}", path)]
            if expl_col
            else pl.Series([None] * frame.height, dtype=pl.Utf8)
        )
        judgment_frames.append(
            pl.DataFrame(
                {
                    "row": range(1, frame.height + 1),
                    "evaluator": name,
                    "kind": kind,
                    "version": mapping.judge_version,
                    "label": labels,
                    "score": scores,
                    "explanation": expl,
                }
            ).filter(pl.col("label").is_not_null())
        )
    return pl.concat(judgment_frames) if judgment_frames else None


def _humans(frame: pl.DataFrame, mapping: TableMapping, path: Path) -> pl.DataFrame | None:
    human_frames = []
    for annotator, col in mapping.judges.get("human", {}).items():
        human_values = frame[_column_name(frame, col, f"human:{annotator}", path)].to_list()
        human_labels = [verdicts.normalize_human_label(v, column=col) for v in human_values]
        ccol = mapping.judges.get("human_coherent", {}).get(annotator)
        coherent = (
            [
                verdicts.normalize_bool(v, column=ccol)
                for v in frame[_column_name(frame, ccol, f"human_coherent:{annotator}", path)].to_list()
            ]
            if ccol
            else [None] * frame.height
        )
        ncol = mapping.judges.get("human_note", {}).get(annotator)
        notes = (
            frame[_column_name(frame, ncol, f"human_note:{annotator}", path)].to_list()
            if ncol
            else [None] * frame.height
        )
        human_frames.append(
            pl.DataFrame(
                {
                    "row": range(1, frame.height + 1),
                    "annotator": annotator,
                    "label": human_labels,
                    "coherent": [None if c is None else int(c) for c in coherent],
                    "note": notes,
                },
                schema_overrides={"coherent": pl.Int64, "note": pl.Utf8, "label": pl.Utf8},
            ).filter(pl.col("label").is_not_null())
        )
    return pl.concat(human_frames) if human_frames else None


def _column_name(frame: pl.DataFrame, col: str, what: str, path: Path) -> str:
    _column(frame, col, what, path)
    return col


def _registered_kind(name: str) -> str | None:
    spec = evaluators.registry().get(name)
    return spec.kind if spec else None


def _normalise(values: pl.Series, kind: str, column: str) -> tuple[list[str | None], list[float | None]]:
    """Normalise each distinct value once (fast on large files)."""
    table: dict[str | None, tuple[str | None, float | None]] = {}
    for v in values.unique().to_list():
        if v is None or str(v).strip() == "":
            table[v] = (None, None)
        else:
            table[v] = verdicts.normalize_label(v, kind, column=column)
    pairs = [table[v] for v in values.to_list()]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def import_table(store: Store, path: str | Path, mapping: TableMapping, *, replace: bool = False) -> ImportResult:
    """Import one CSV/JSONL/Parquet file (atomic and idempotent)."""
    p = Path(path)
    frame = read_table(p)
    gens, judgments, humans = build_records(frame, mapping, p)
    hints = {
        "response": "map the column holding model outputs: --map response=COLUMN",
        "prompt": "map the prompt text: --map prompt=COLUMN",
        "experiment": "map a column or pass --set experiment=NAME",
        "mitigation": "map a column or pass --set mitigation=NAME",
        "step": "map a column or pass --set step=N",
        "benchmark": "map a column or pass --set benchmark=NAME",
    }
    return write_records(
        store,
        gens,
        judgments,
        humans,
        source=p.name,
        benchmark_kind=mapping.benchmark_kind or _kinds(gens, judgments),
        field_hint=hints,
        replace=replace,
    )
