"""A sweep file (TOML): one experiment's checkpoints × benchmarks × evaluators, read into run specs.

experiment = "my-ft"
capability_target = 0.8          # optional, stored with the experiment

[benchmarks]                     # name = limit (0: every prompt)
harmbench = 50
arithmetic = 100

[run]                            # optional: what ``capsafe run`` takes
evaluators = ["keyword_refusal", "coherence"]
backend = "transformers"         # local and ray executors (servers: always the served names)
sampling_seed = 0
batch_size = 16

[decoding]                       # optional
max_new_tokens = 64

[checkpoints]                    # a folder pattern of saves ...
pattern = "runs/{mitigation}/seed-{seed}/step-{step}"

[[checkpoint]]                   # ... and/or a list: a folder, adapter, GGUF, alias or served model name
mitigation = "lora"
seed = 0
step = 40
model = "lora-step-40"

[servers]                        # --executor servers
urls = ["http://10.0.0.5:8000/v1", "http://10.0.0.6:8000/v1"]
concurrency = 8                  # requests in flight per server

[ray]                            # --executor ray
address = "auto"                 # omitted: a local Ray instance
num_gpus = 1
num_cpus = 1

[judges]                         # optional: the LLM judges' model
judge_model = "llama-guard-3-8b"
judge_backend = "openai"
judge_base_url = "http://10.0.0.7:8000/v1"
"""

from __future__ import annotations

import glob
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from capsafe_core import benchmarks
from capsafe_core.errors import BadInput, NotFound
from capsafe_core.runner import RunSpec
from capsafe_core.runner.generation import decoding_from_options
from capsafe_core.runner.judging import evaluator_plan, judge_options

TOP = {"experiment", "capability_target", "benchmarks", "run", "decoding", "checkpoints", "checkpoint", "servers"}
TOP |= {"ray", "judges"}
RUN_KEYS = {"evaluators", "backend", "sampling_seed", "batch_size", "dtype", "device", "reference_model"}
RUN_KEYS |= {"concurrency", "timeout", "max_retries", "base_model", "trust_remote_code"}
DECODING_KEYS = {"max_new_tokens", "temperature", "top_p", "system_prompt"}
# what each [run] / [decoding] value must be: (type, lowest value or None)
VALUE_TYPES: dict[str, tuple[type | tuple[type, ...], float | None]] = {
    "batch_size": (int, 1), "concurrency": (int, 1), "max_retries": (int, 0), "sampling_seed": (int, None),
    "timeout": ((int, float), 1e-9), "max_new_tokens": (int, 1), "temperature": ((int, float), 0),
    "top_p": ((int, float), 1e-9), "backend": (str, None), "dtype": (str, None), "device": (str, None),
    "reference_model": (str, None), "base_model": (str, None), "system_prompt": (str, None),
    "trust_remote_code": (bool, None), "evaluators": (list, None),
}  # fmt: skip


def _check_values(table: dict[str, Any], name: str, path: Path) -> None:
    for key, value in table.items():
        kind, lowest = VALUE_TYPES[key]
        wrong = not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
        if not wrong and lowest is not None and value < lowest:
            wrong = True
        if not wrong and key == "evaluators":
            wrong = not all(isinstance(e, str) for e in value)
        if wrong:
            raise BadInput(f"{path}: [{name}] {key} = {value!r} is not a valid value for {key}")


@dataclass(frozen=True)
class Checkpoint:
    mitigation: str
    seed: int
    step: int
    model: str


@dataclass
class Sweep:
    path: Path
    experiment: str
    checkpoints: list[Checkpoint]
    specs: list[RunSpec]  # one per checkpoint, in order
    servers: list[str] = field(default_factory=list)
    server_concurrency: int = 8
    ray: dict[str, Any] = field(default_factory=dict)


def _table(doc: dict[str, Any], key: str, allowed: set[str] | None, path: Path) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise BadInput(f"{path}: [{key}] must be a table")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise BadInput(f"{path}: unknown key '{unknown[0]}' in [{key}]; use {', '.join(sorted(allowed))}")
    return value


def expand_pattern(pattern: str, base: Path) -> list[Checkpoint]:
    """Folders matching ``pattern`` ({mitigation}, {seed}, {step} as placeholders), sorted."""
    for name in re.findall(r"{(\w+)}", pattern):
        if name not in ("mitigation", "seed", "step"):
            raise BadInput(f"Unknown placeholder {{{name}}} in the pattern; use {{mitigation}}, {{seed}}, {{step}}")
    if "{step}" not in pattern:
        raise BadInput(f"The pattern {pattern!r} needs {{step}}")
    full = pattern if Path(pattern).is_absolute() else str(base / pattern)
    parts = re.split(r"({mitigation}|{seed}|{step})", full)
    rx = "".join(
        {"{mitigation}": r"(?P<mitigation>[^/]+)", "{seed}": r"(?P<seed>\d+)", "{step}": r"(?P<step>\d+)"}.get(
            p, re.escape(p)
        )
        for p in parts
    )
    out = []
    for hit in sorted(glob.glob(re.sub(r"{\w+}", "*", full))):
        m = re.fullmatch(rx, hit)
        if m:
            g = m.groupdict()
            out.append(Checkpoint(g.get("mitigation") or "none", int(g.get("seed") or 0), int(g["step"]), hit))
    return out


def _checkpoints(doc: dict[str, Any], path: Path) -> list[Checkpoint]:
    pattern = _table(doc, "checkpoints", {"pattern"}, path).get("pattern")
    out = expand_pattern(str(pattern), path.parent) if pattern else []
    listed = doc.get("checkpoint", [])
    if not isinstance(listed, list):
        raise BadInput(f"{path}: checkpoints are listed as [[checkpoint]] tables")
    for i, c in enumerate(listed, start=1):
        if not isinstance(c, dict):
            raise BadInput(f"{path}: checkpoint {i} is not a table; list checkpoints as [[checkpoint]] tables")
        missing = [k for k in ("step", "model") if k not in c]
        if missing:
            raise BadInput(f"{path}: checkpoint {i} lacks '{missing[0]}' (each needs step and model)")
        if not all(isinstance(c.get(k, 0), int) and not isinstance(c.get(k, 0), bool) for k in ("seed", "step")):
            raise BadInput(f"{path}: checkpoint {i}: seed and step must be whole numbers")
        out.append(Checkpoint(str(c.get("mitigation", "none")), int(c.get("seed", 0)), int(c["step"]), str(c["model"])))
    if not out:
        raise BadInput(f"{path}: no checkpoints; give [checkpoints] pattern (matching no folder?) or [[checkpoint]]")
    keys = [(c.mitigation, c.seed, c.step) for c in out]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup:
        raise BadInput(f"{path}: checkpoint mitigation={dup[0]} seed={dup[1]} step={dup[2]} is given twice")
    return out


def load(path: Path) -> Sweep:
    """Read and check a sweep file; every problem is one line naming the key."""
    if not path.is_file():
        raise NotFound(f"No sweep file {path}; write one (see capsafe sweep --help)")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path} is not valid TOML ({e})") from None
    unknown = sorted(set(doc) - TOP)
    if unknown:
        raise BadInput(f"{path}: unknown key '{unknown[0]}'; use {', '.join(sorted(TOP))}")
    if not isinstance(doc.get("experiment"), str) or not doc["experiment"]:
        raise BadInput(f'{path}: experiment = "NAME" is missing')
    limits = _table(doc, "benchmarks", None, path)
    if not limits:
        raise BadInput(f"{path}: [benchmarks] is empty; give name = limit (0: every prompt)")
    for key, lim in limits.items():
        if not isinstance(lim, int) or isinstance(lim, bool) or lim < 0:
            raise BadInput(f"{path}: [benchmarks] {key} = {lim!r}; give a whole number of prompts (0: every prompt)")
    per = {n: (lim or None) for key, lim in limits.items() for n in benchmarks.expand([key])}  # names checked
    names = list(per)
    run = _table(doc, "run", RUN_KEYS, path)
    dec = _table(doc, "decoding", DECODING_KEYS, path)
    _check_values(run, "run", path)
    _check_values(dec, "decoding", path)
    decoding = decoding_from_options(
        max_new_tokens=int(dec.get("max_new_tokens", 64)), temperature=float(dec.get("temperature", 0.0)),
        top_p=float(dec.get("top_p", 1.0)), seed=int(run.get("sampling_seed", 0)),
        system_prompt=dec.get("system_prompt"),
    )  # fmt: skip
    evaluators = run.get("evaluators")
    evaluator_plan(evaluators, names)  # unknown evaluators refused here
    judges = judge_options(**_table(doc, "judges", {"judge_model", "judge_backend", "judge_base_url"}, path))
    base = RunSpec(
        experiment=doc["experiment"], model="", benchmarks=names, limits=per, seed=int(run.get("sampling_seed", 0)),
        evaluators=evaluators, decoding=decoding, judge_options=judges,
        experiment_fields={"capability_target": doc["capability_target"]} if "capability_target" in doc else {},
        command=f"capsafe sweep {path}",
        **{k: v for k, v in run.items() if k not in ("evaluators", "sampling_seed")},
    )  # fmt: skip
    cks = _checkpoints(doc, path)
    specs = [replace(base, mitigation=c.mitigation, run_seed=c.seed, step=c.step, model=c.model) for c in cks]
    servers = _table(doc, "servers", {"urls", "concurrency"}, path)
    urls, conc = servers.get("urls", []), servers.get("concurrency", 8)
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise BadInput(f'{path}: [servers] urls must be a list of base URLs, e.g. ["http://10.0.0.5:8000/v1"]')
    if not isinstance(conc, int) or isinstance(conc, bool) or conc < 1:
        raise BadInput(f"{path}: [servers] concurrency = {conc!r}; give the requests in flight per server (1 or more)")
    return Sweep(
        path, doc["experiment"], cks, specs, list(urls), conc,
        _table(doc, "ray", {"address", "num_gpus", "num_cpus"}, path),
    )  # fmt: skip
