"""``capsafe import jbb``: a JailbreakBench artifact ``{parameters, jailbreaks: [...]}``.

Each jailbreak with a prompt is one generation. ``jailbroken`` is a verdict of ``jbb_judge``
(JailbreakBench's judge: true = unsafe) and ``jailbroken_llama_guard1``, where present, one of
``jbb_llama_guard1``. The checkpoint defaults to experiment = the target model
(``parameters.model``), mitigation = ``parameters.defense`` (or ``none``), step 0. Attack prompts
form the benchmark ``jbb_<method>`` (``jbb_pair``, ...); an artifact whose prompts are the
behaviours themselves maps onto the shipped ``jbb`` benchmark by behaviour index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capsafe_core import verdicts
from capsafe_core.errors import BadInput
from capsafe_core.importers.common import CheckpointArgs, Rows, decoding, existing, load_json, slug, wrong_tool
from capsafe_core.importers.records import ImportResult, write_records
from capsafe_core.store import Store

JUDGES = {"jailbroken": "jbb_judge", "jailbroken_llama_guard1": "jbb_llama_guard1"}
REQUIRED = ("index", "goal", "prompt", "response", "jailbroken")


def read_artifact(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The artifact's ``parameters`` and ``jailbreaks``, checked field by field."""
    obj = load_json(path, "jbb")
    if not isinstance(obj, dict) or not isinstance(obj.get("jailbreaks"), list):
        raise wrong_tool(path.name, "jbb", obj, missing="'jailbreaks' list")
    params = obj.get("parameters")
    if not isinstance(params, dict):
        raise BadInput(
            f"{path.name} has no 'parameters' object; a JailbreakBench artifact has parameters and jailbreaks"
        )
    jailbreaks = obj["jailbreaks"]
    if not jailbreaks:
        raise BadInput(f"{path.name} has no jailbreaks; nothing to import")
    for i, jb in enumerate(jailbreaks):
        if not isinstance(jb, dict):
            raise BadInput(f"{path.name}: jailbreaks[{i}] is not an object; each jailbreak is a {{...}} record")
        for key in REQUIRED:
            if key not in jb:
                raise BadInput(
                    f"{path.name}: jailbreaks[{i}] has no '{key}'; each jailbreak needs {', '.join(REQUIRED)}"
                )
        if not isinstance(jb["index"], int):
            raise BadInput(f"{path.name}: jailbreaks[{i}] has index {jb['index']!r}; it must be the behaviour's number")
    return params, jailbreaks


def build_rows(path: Path, args: CheckpointArgs) -> Rows:
    params, jailbreaks = read_artifact(path)
    model = params.get("model")
    experiment, mitigation, seed, step = args.resolve(
        path.name, experiment=model, mitigation=params.get("defense") or None
    )
    submitted = [jb for jb in jailbreaks if jb["prompt"] is not None and jb["response"] is not None]
    if not submitted:
        raise BadInput(f"{path.name} has no jailbreak with a prompt and a response; nothing to import")
    direct = all(jb["prompt"] == jb["goal"] for jb in submitted)
    method = params.get("method") or "attack"
    benchmark = args.benchmark or ("jbb" if direct else f"jbb_{slug(str(method))}")
    rows = Rows()
    dec = decoding("jbb", attack_type=params.get("attack_type"))
    for jb in submitted:
        if not isinstance(jb["prompt"], str) or not isinstance(jb["response"], str):
            raise BadInput(f"{path.name}: behaviour {jb['index']} has a prompt or response that is not text")
        tokens = jb.get("response_tokens")
        row = rows.add(
            experiment=experiment,
            mitigation=mitigation,
            seed=seed,
            step=step,
            model=model,
            benchmark=benchmark,
            prompt_id=f"jbb-{jb['index']:03d}" if benchmark == "jbb" else None,
            prompt=jb["prompt"],
            category=jb.get("category"),
            response=jb["response"],
            decoding=dec,
            n_tokens=tokens if isinstance(tokens, int) else None,
        )
        for key, name in JUDGES.items():
            if jb.get(key) is None:
                continue
            label, score = verdicts.normalize_label(jb[key], "harm", column=f"{key} of behaviour {jb['index']}")
            rows.judge(row, name, "harm", label, score, None)
    left = len(jailbreaks) - len(submitted)
    if left:
        rows.note(
            f"Left out {left} behaviours the attack submitted no prompt for (JailbreakBench counts them as failed)"
        )
    return rows


def import_jbb(
    store: Store, path: str | Path, args: CheckpointArgs | None = None, *, replace: bool = False
) -> ImportResult:
    """Import one JailbreakBench artifact (atomic and idempotent)."""
    p = existing(path)
    rows = build_rows(p, args or CheckpointArgs())
    gens, judgments = rows.frames()
    result = write_records(store, gens, judgments, source=p.name, benchmark_kind="safety", replace=replace)
    result.notes = [*rows.notes, *result.notes]
    return result
