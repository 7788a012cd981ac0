"""The ``capsafe`` command: a thin layer over the engine.

Each command opens the database from ``--db`` or ``$CAPSAFE_DB``, calls one engine function and
prints its result. A ``CapsafeError`` is printed as one line (``Error: ...``) with exit code 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import polars as pl

from capsafe_core.errors import CapsafeError

DEFAULT_DB = "capsafe.db"


class CapsafeGroup(click.Group):
    """Shows a problem the user can fix as one line instead of a traceback: a ``CapsafeError``, a
    SQLite error (busy, read-only, damaged file) or a file-system error (missing folder, permissions)."""

    def invoke(self, ctx: click.Context) -> Any:
        import sqlite3

        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # a bad option: one line too, with where to look (exit 2, as click)
            where = e.ctx.command_path if e.ctx else ctx.command_path
            _fail(f"{e.format_message()} (see: {where} --help)", code=2)
        except CapsafeError as e:
            _fail(str(e))
        except sqlite3.Error as e:
            from capsafe_core.store.connection import translate

            _fail(str(translate(e, ctx.params.get("db_path") or "the database")))
        except OSError as e:
            if e.filename is None:
                raise
            _fail(f"cannot use {e.filename}: {e.strerror or e}; check the path and its permissions")


def _fail(message: str, *, code: int = 1) -> None:
    click.echo(f"Error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def db_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        "db_path",
        envvar="CAPSAFE_DB",
        default=DEFAULT_DB,
        show_default=True,
        type=click.Path(dir_okay=False),
        help="SQLite database file (or set CAPSAFE_DB); 'demo' is the bundled demo database.",
    )(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def judge_model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--judge-model/--judge-backend/--judge-base-url for the LLM judges (collected into ``judge_options``)."""
    f = click.option(
        "--judge-base-url", help="OpenAI-compatible server of the judge model (with --judge-backend openai)."
    )(f)
    f = click.option(
        "--judge-backend",
        default="transformers",
        show_default=True,
        type=click.Choice(["transformers", "openai"]),
        help="Backend of the LLM judges.",
    )(f)
    f = click.option(
        "--judge-model",
        default="smollm2-135m-instruct",
        show_default=True,
        help="Judge model of the LLM judges (strongreject_rubric, qi_harmfulness, harmbench_cls, llamaguard, "
        "em_coherence). The default SmolLM2-135M is far too weak to trust; use a strong model for real results.",
    )(f)
    return f


def judge_options(judge_model: str, judge_backend: str, judge_base_url: str | None) -> dict[str, Any]:
    if judge_backend == "openai" and not judge_base_url:
        from capsafe_core.errors import BadInput

        raise BadInput("--judge-backend openai needs --judge-base-url, e.g. http://127.0.0.1:8000/v1")
    return {"judge_model": judge_model, "judge_backend": judge_backend, "judge_base_url": judge_base_url}


def resolve_db(db_path: str) -> str:
    """``demo`` names the bundled demo database (decompressed on first use); anything else is a path."""
    if db_path == "demo":
        from capsafe_core import bundled

        return str(bundled.demo_db())
    return db_path


def open_store(db_path: str, *, create: bool = False, read_only: bool = False):
    """The database for a command: reading commands open it read-only (also in a read-only folder)."""
    from capsafe_core.store import Store

    ctx = click.get_current_context(silent=True)
    timeout = ctx.find_root().params.get("busy_timeout") if ctx else None
    return Store.open(resolve_db(db_path), create=create, read_only=read_only, timeout=timeout)


def replace_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--replace",
        is_flag=True,
        help="Replace stored generations whose response differs (their verdicts and human labels are dropped; "
        "the count is printed). Without it such an import is refused and nothing is written.",
    )(f)


def print_frame(frame: pl.DataFrame, *, as_json: bool, drop: tuple[str, ...] = ()) -> None:
    frame = frame.drop([c for c in drop if c in frame.columns])
    if as_json:
        click.echo(json.dumps(frame.to_dicts(), indent=1, default=str, ensure_ascii=False))
        return
    if frame.height == 0:
        click.echo("(none)")
        return
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=200,
        fmt_str_lengths=60,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
    ):
        click.echo(str(frame))


@click.group(cls=CapsafeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="capsafe")
@click.option(
    "--busy-timeout",
    type=float,
    envvar="CAPSAFE_BUSY_TIMEOUT",
    help="Seconds to wait while another process writes to the database [default: 30].",
)
def cli(busy_timeout: float | None) -> None:
    """capsafe: safety of fine-tuned LLMs, measured at a stated capability.

    \b
    Example:
      capsafe init --db results.db
      capsafe ls benchmarks
    """
    if busy_timeout is not None and busy_timeout < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--busy-timeout")


@cli.command()
@db_option
def init(db_path: str) -> None:
    """Create (or migrate) a capsafe database.

    \b
    Example:
      capsafe init --db results.db
    """
    from capsafe_core.store import SCHEMA_VERSION

    with open_store(db_path, create=True) as store:
        click.echo(f"{store.path}: capsafe database, schema version {SCHEMA_VERSION}")


@cli.group(name="ls", cls=CapsafeGroup)
def ls_group() -> None:
    """List benchmarks, experiments, checkpoints or evaluators.

    \b
    Example:
      capsafe ls benchmarks --json
    """


@ls_group.command(name="benchmarks")
@db_option
@json_option
def ls_benchmarks(db_path: str, as_json: bool) -> None:
    """Shipped benchmarks (kind, prompts, licence), plus any others stored in the database.

    \b
    Example:
      capsafe ls benchmarks --json
    """
    from capsafe_core import benchmarks

    rows = [
        {
            "name": s.name,
            "kind": s.kind,
            "prompts": s.prompts,
            "license": s.license,
            "source": s.source,
            "scorer": s.scorer,
            "shipped": True,
        }
        for s in benchmarks.registry().values()
    ]
    if Path(resolve_db(db_path)).exists():
        with open_store(db_path, read_only=True) as store:
            shipped = {r["name"] for r in rows}
            for r in store.benchmarks().to_dicts():
                if r["name"] not in shipped:
                    rows.append(
                        {
                            "name": r["name"],
                            "kind": r["kind"],
                            "prompts": r["prompts"],
                            "license": r["license"],
                            "source": r["source"],
                            "scorer": None,
                            "shipped": False,
                        }
                    )
    frame = pl.DataFrame(rows)
    print_frame(frame, as_json=as_json, drop=() if as_json else ("source",))
    if not as_json:
        groups = benchmarks.groups()
        click.echo("groups: " + ", ".join(f"{g} = {'+'.join(m)}" for g, m in groups.items()))


@ls_group.command(name="experiments")
@db_option
@json_option
def ls_experiments(db_path: str, as_json: bool) -> None:
    """Experiments in the database.

    \b
    Example:
      capsafe ls experiments --db results.db
    """
    with open_store(db_path, read_only=True) as store:
        print_frame(store.experiments(), as_json=as_json, drop=() if as_json else ("id", "meta"))


@ls_group.command(name="checkpoints")
@db_option
@json_option
@click.option("--experiment", "-e", help="Only this experiment.")
def ls_checkpoints(db_path: str, as_json: bool, experiment: str | None) -> None:
    """Checkpoints (experiment, mitigation, step) with their generation counts.

    \b
    Example:
      capsafe ls checkpoints --experiment demo
    """
    with open_store(db_path, read_only=True) as store:
        print_frame(store.checkpoints(experiment), as_json=as_json, drop=() if as_json else ("id", "meta"))


@ls_group.command(name="evaluators")
@db_option
@json_option
def ls_evaluators(db_path: str, as_json: bool) -> None:
    """Registered evaluators, and the evaluators with judgments in the database.

    \b
    Example:
      capsafe ls evaluators --json
    """
    from capsafe_core import evaluators

    rows = [
        {
            "name": s.name,
            "kind": s.kind,
            "version": s.version,
            "registered": True,
            "judgments": 0,
            "description": s.description,
        }
        for s in evaluators.registry().values()
    ]
    if Path(resolve_db(db_path)).exists():
        with open_store(db_path, read_only=True) as store:
            stored = {(r["name"], r["version"]): r for r in store.evaluators().to_dicts()}
        for row in rows:
            hit = stored.pop((row["name"], row["version"]), None)
            row["judgments"] = hit["judgments"] if hit else 0
        rows += [
            {
                "name": n,
                "kind": r["kind"],
                "version": v,
                "registered": False,
                "judgments": r["judgments"],
                "description": "",
            }
            for (n, v), r in stored.items()
        ]
    print_frame(pl.DataFrame(rows), as_json=as_json, drop=() if as_json else ("description",))


@cli.group(name="import", cls=CapsafeGroup)
def import_group() -> None:
    """Import results you already have.

    \b
    Example:
      capsafe import table results.csv --map response=output --set experiment=my-ft
    """


@import_group.command(name="table")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="Read FIELD from COLUMN. FIELD: experiment, mitigation, step, model, benchmark, prompt_id, "
    "prompt, category, reference, response, sample; or judge:NAME, score:NAME, explanation:NAME, "
    "human:ANNOTATOR, human_coherent:ANNOTATOR, human_note:ANNOTATOR.",
)
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE", help="Set FIELD to a constant.")
@click.option(
    "--judge-kind",
    "judge_kinds",
    multiple=True,
    metavar="NAME=KIND",
    help="Kind of an imported judge (capability, refusal, harm, coherence) when its values "
    "do not say (1/0 alone means harm: 1 = unsafe).",
)
@click.option("--judge-version", default="imported", show_default=True, help="Version stored for imported judges.")
@click.option(
    "--benchmark-kind",
    default="safety",
    show_default=True,
    type=click.Choice(["safety", "overrefusal", "capability"]),
    help="Kind of a new benchmark.",
)
@replace_option
@db_option
def import_table_cmd(
    file: str,
    maps: tuple[str, ...],
    sets: tuple[str, ...],
    judge_kinds: tuple[str, ...],
    judge_version: str,
    benchmark_kind: str,
    replace: bool,
    db_path: str,
) -> None:
    """Import a CSV, JSONL or Parquet file, one generation per row.

    Columns named like a field are used without --map. Unset, experiment and benchmark are
    the file name, mitigation is 'none' and step is 0. Prompts of a shipped benchmark are matched
    by prompt_id or text; other benchmarks are created.

    \b
    Example:
      capsafe import table xstest_v2_completions_gpt4.csv --set experiment=xstest --set model=gpt4 \\
        --set benchmark=xstest_completions --map prompt_id=id --map response=completion \\
        --map human:annotator_1=annotation_1 --map human:final=final_label
    """
    from capsafe_core.importers.table import import_table, parse_mapping

    mapping = parse_mapping(
        list(maps), list(sets), list(judge_kinds), judge_version=judge_version, benchmark_kind=benchmark_kind
    )
    with open_store(db_path, create=True) as store:
        result = import_table(store, file, mapping, replace=replace)
    click.echo(result.summary())


def checkpoint_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--experiment/--mitigation/--step/--benchmark`` of the tool importers."""
    f = click.option("--benchmark", "-b", help="Store the prompts under this benchmark.")(f)
    f = click.option("--step", type=int, help="Checkpoint step. [default: 0]")(f)
    f = click.option("--mitigation", "-m", help="Mitigation. [default: from the file, else none]")(f)
    return click.option("--experiment", "-e", help="Experiment. [default: the model's name in the file]")(f)


def _checkpoint(experiment: str | None, mitigation: str | None, step: int | None, benchmark: str | None) -> Any:
    from capsafe_core.importers.common import CheckpointArgs

    return CheckpointArgs(experiment, mitigation, step, benchmark)


@import_group.command(name="inspect")
@click.argument("logs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@checkpoint_options
@click.option("--judge-kind", "judge_kinds", multiple=True, metavar="NAME=KIND", help="Kind of a scorer's verdicts.")
@click.option(
    "--benchmark-kind", type=click.Choice(["safety", "overrefusal", "capability"]), help="Kind of a new benchmark."
)
@replace_option
@db_option
def import_inspect_cmd(
    logs: tuple[str, ...],
    experiment: str | None,
    mitigation: str | None,
    step: int | None,
    benchmark: str | None,
    judge_kinds: tuple[str, ...],
    benchmark_kind: str | None,
    replace: bool,
    db_path: str,
) -> None:
    """Import Inspect eval logs (.eval or .json), one generation per sample and epoch.

    Each scorer becomes the evaluator inspect:SCORER. Unset, the experiment is the model's short
    name, mitigation 'none', step 0, and the benchmark the task (or the shipped benchmark whose
    prompts the samples are). A new benchmark is capability if every scorer is, else safety.

    \b
    Example:
      capsafe import inspect logs/2025-01-01T10-00-00_gsm8k_abc.eval --experiment my-ft --mitigation lora --step 40
    """
    from capsafe_core.importers.inspect_log import import_inspect
    from capsafe_core.importers.table import parse_mapping

    kinds = parse_mapping(judge_kinds=list(judge_kinds)).judge_kinds
    with open_store(db_path, create=True) as store:
        result = import_inspect(
            store,
            list(logs),
            _checkpoint(experiment, mitigation, step, benchmark),
            judge_kinds={k if k.startswith("inspect:") else f"inspect:{k}": v for k, v in kinds.items()},
            benchmark_kind=benchmark_kind,
            replace=replace,
        )
    click.echo(result.summary())


@import_group.command(name="lm-eval")
@click.argument("path", type=click.Path())
@checkpoint_options
@replace_option
@db_option
def import_lm_eval_cmd(
    path: str,
    experiment: str | None,
    mitigation: str | None,
    step: int | None,
    benchmark: str | None,
    replace: bool,
    db_path: str,
) -> None:
    """Import lm-evaluation-harness output written with --log_samples (a file or its folder).

    Each document is one generation; each per-sample metric scored in [0, 1] becomes the
    capability evaluator lm-eval:METRIC. Unset, the experiment is the model's short name
    (pretrained= of model_args), mitigation 'none', step 0, and the benchmark the task.

    \b
    Example:
      capsafe import lm-eval out/my-model/ --experiment my-ft --mitigation lora --step 40
    """
    from capsafe_core.importers.lmeval import import_lm_eval

    with open_store(db_path, create=True) as store:
        result = import_lm_eval(store, path, _checkpoint(experiment, mitigation, step, benchmark), replace=replace)
    click.echo(result.summary())


@import_group.command(name="harmbench")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--behaviors", type=click.Path(dir_okay=False), help="HarmBench behaviours CSV (for categories).")
@checkpoint_options
@replace_option
@db_option
def import_harmbench_cmd(
    file: str,
    behaviors: str | None,
    experiment: str | None,
    mitigation: str | None,
    step: int | None,
    benchmark: str | None,
    replace: bool,
    db_path: str,
) -> None:
    """Import HarmBench completions or results ({BehaviorID: [{test_case, generation, label}]}).

    label (1 harmful, 0 not, -1 unreadable) is stored as the verdict of harmbench_cls. Direct
    requests map onto the shipped harmbench benchmark; an attack's test cases need --benchmark.
    Unset, the experiment is the file name (HarmBench names it after the model).

    \b
    Example:
      capsafe import harmbench results/DirectRequest/default/results/llama2_7b.json --experiment my-ft
    """
    from capsafe_core.importers.harmbench import import_harmbench

    with open_store(db_path, create=True) as store:
        result = import_harmbench(
            store, file, _checkpoint(experiment, mitigation, step, benchmark), behaviors=behaviors, replace=replace
        )
    click.echo(result.summary())


@import_group.command(name="jbb")
@click.argument("file", type=click.Path(dir_okay=False))
@checkpoint_options
@replace_option
@db_option
def import_jbb_cmd(
    file: str,
    experiment: str | None,
    mitigation: str | None,
    step: int | None,
    benchmark: str | None,
    replace: bool,
    db_path: str,
) -> None:
    """Import a JailbreakBench artifact ({parameters, jailbreaks}).

    jailbroken is stored as the verdict of jbb_judge, jailbroken_llama_guard1 as jbb_llama_guard1.
    Unset, the experiment is parameters.model, the mitigation parameters.defense (or 'none'),
    step 0, and the benchmark jbb_METHOD (jbb when the prompts are the behaviours themselves).

    \b
    Example:
      capsafe import jbb attack-artifacts/PAIR/black_box/vicuna-13b-v1.5.json
    """
    from capsafe_core.importers.jbb import import_jbb

    with open_store(db_path, create=True) as store:
        result = import_jbb(store, file, _checkpoint(experiment, mitigation, step, benchmark), replace=replace)
    click.echo(result.summary())


@cli.command(name="export")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--experiment", "-e", help="Only this experiment.")
@click.option("--benchmark", "-b", help="Only this benchmark.")
@db_option
def export_cmd(out: str, experiment: str | None, benchmark: str | None, db_path: str) -> None:
    """Write one row per generation with every verdict and human label (.csv, .parquet, .jsonl).

    \b
    Example:
      capsafe export results.parquet --experiment demo
    """
    from capsafe_core.export import export

    with open_store(db_path, read_only=True) as store:
        n = export(store, out, experiment=experiment, benchmark=benchmark)
    click.echo(f"Wrote {n} generations to {out}")


def _clean(value: Any) -> Any:
    """JSON has no NaN: undefined statistics (κ with one class) become null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def print_report(tables: dict[str, pl.DataFrame], *, as_json: bool, titles: dict[str, str]) -> None:
    if as_json:
        click.echo(json.dumps(_clean({k: t.to_dicts() for k, t in tables.items()}), indent=1, default=str))
        return
    for key, title in titles.items():
        click.echo(f"\n{title}")
        frame = tables[key]
        print_frame(frame.with_columns(pl.col(pl.Float64).round(3)) if frame.height else frame, as_json=False)


@cli.command(name="agreement")
@click.option("--experiment", "-e", help="Only this experiment (default: each one).")
@click.option("--benchmark", "-b", help="Only this benchmark.")
@click.option("--dimension", type=click.Choice(["unsafe", "refusal"]), help="Only one dimension (default: both).")
@json_option
@db_option
def agreement_cmd(
    experiment: str | None, benchmark: str | None, dimension: str | None, as_json: bool, db_path: str
) -> None:
    """How far judges agree with each other and with people: raw agreement, Cohen's κ with a
    bootstrap 95% CI and the confusion matrix (rows: rater a, columns: rater b; 0 then 1) for every
    pair, overall and split coherent / incoherent; and the safe-because-broken rate per judge.

    \b
    Example:
      capsafe agreement --experiment xstest --dimension refusal --json
    """
    from capsafe_core.reports import agreement_report

    with open_store(db_path, read_only=True) as store:
        tables = agreement_report(store, experiment=experiment, benchmark=benchmark, dimension=dimension)
    print_report(
        tables,
        as_json=as_json,
        titles={
            "agreement": "Agreement between raters (subset: all, coherent, incoherent, human_coherent, ...)",
            "safe_because_broken": "Safe because broken: judged-safe answers on safety prompts that are incoherent",
        },
    )


@cli.command(name="compare")
@click.option("--target", "-t", type=float, help="Capability target (default: the experiment's stored target).")
@click.option("--experiment", "-e", help="Only this experiment (default: each one).")
@click.option("--set-apart-incoherent", is_flag=True, help="Leave incoherent answers out of the safety values.")
@json_option
@db_option
def compare_cmd(
    target: float | None, experiment: str | None, set_apart_incoherent: bool, as_json: bool, db_path: str
) -> None:
    """Mitigations at a matched capability: per (benchmark, evaluator, metric) the safety of the first
    checkpoint that reaches the target (95% bootstrap CI) and the value interpolated between the
    checkpoints around it; then the rankings, Kendall's τ between them, and where the winner changes.

    \b
    Example:
      capsafe compare --target 0.5 --experiment smollm2-arithmetic --json
    """
    from capsafe_core.reports import compare_report

    with open_store(db_path, read_only=True) as store:
        tables = compare_report(store, target=target, experiment=experiment, set_apart_incoherent=set_apart_incoherent)
    if not as_json:
        c = tables["compare"]
        from capsafe_core.analysis.formatting import ci_expr

        ci = ci_expr("value", "lo", "hi")
        compact = c.select(
            "experiment",
            "benchmark",
            "evaluator",
            "metric",
            "mitigation",
            pl.when(pl.col("reached"))
            .then(pl.format("step {}", "first_step"))
            .otherwise(pl.lit("not reached"))
            .alias("at"),
            pl.when(pl.col("reached")).then(ci).otherwise(pl.lit("")).alias("value [95% CI]"),
            pl.col("interp_value").round(3).alias("interpolated"),
            "best",
            "winner_changes",
        )
        tables = {**tables, "compare": compact, "tau": tables["tau"].drop("target", strict=False)}
    print_report(
        tables,
        as_json=as_json,
        titles={
            "compare": "Safety at the capability target (value = first checkpoint reaching it; interp = interpolated)",
            "rankings": "Ranking of the mitigations per view (best first)",
            "tau": "Kendall's τ between rankings (same_winner false: the conclusion changes)",
        },
    )


def _interrupted(store_path: str) -> None:
    click.echo(
        f"Interrupted: every finished batch is saved in {store_path}; run the same command again to resume.",
        err=True,
    )
    sys.exit(130)


@cli.command(name="run")
@click.option("--experiment", "-e", required=True, help="Experiment name (created if new).")
@click.option("--mitigation", "-m", default="none", show_default=True, help="Mitigation of this checkpoint.")
@click.option("--step", "-s", default=0, show_default=True, type=int, help="Training step (0 = base model).")
@click.option(
    "--model",
    required=True,
    help="Model folder, PEFT adapter folder, .gguf file or alias "
    "(smollm2-135m-instruct); with --backend openai, the server's model name.",
)
@click.option("--benchmarks", "-b", "bench", required=True, help="Comma-separated benchmarks or groups.")
@click.option("--limit", type=int, help="A stable seeded subset of N prompts per benchmark.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the subset and of sampling.")
@click.option("--evaluators", help="Comma-separated evaluators (default: every default evaluator).")
@click.option("--backend", default="transformers", show_default=True, type=click.Choice(["transformers", "openai"]))
@click.option("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (vLLM, llama.cpp).")
@click.option("--max-new-tokens", default=128, show_default=True, type=int)
@click.option("--temperature", default=0.0, show_default=True, type=float, help="0 = greedy.")
@click.option("--top-p", default=1.0, show_default=True, type=float)
@click.option("--system-prompt", help="System message before every prompt.")
@click.option("--batch-size", default=16, show_default=True, type=int)
@click.option("--dtype", default="auto", show_default=True, help="auto (bf16 where supported), float32, bfloat16.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--reference-model", help="Model for the perplexity metric (default: the experiment's step-0 model).")
@click.option("--concurrency", default=8, show_default=True, type=int, help="Parallel requests (openai backend).")
@click.option("--timeout", default=120.0, show_default=True, type=float, help="Seconds per request (openai).")
@click.option("--capability-target", type=float, help="Store the experiment's capability target.")
@judge_model_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@db_option
def run_cmd(
    experiment: str,
    mitigation: str,
    step: int,
    model: str,
    bench: str,
    limit: int | None,
    seed: int,
    evaluators: str | None,
    backend: str,
    base_url: str | None,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    system_prompt: str | None,
    batch_size: int,
    dtype: str,
    device: str,
    reference_model: str | None,
    concurrency: int,
    timeout: float,
    capability_target: float | None,
    judge_model: str,
    judge_backend: str,
    judge_base_url: str | None,
    quiet: bool,
    db_path: str,
) -> None:
    """Evaluate one checkpoint: generate responses, then judge them with every evaluator.

    Stored generations and judgments are skipped, so re-running adds nothing and an
    interrupted run resumes where it stopped.

    \b
    Example:
      capsafe run --experiment demo --model smollm2-135m-instruct \\
        --benchmarks advbench,xstest,arithmetic --limit 20
      capsafe run -e demo -m lora -s 40 --model runs/lora/step-40 -b advbench --backend openai \\
        --base-url http://127.0.0.1:8000/v1
    """
    from capsafe_core.runner import RunSpec, decoding_from_options, run_checkpoint

    if backend == "openai" and not base_url:
        raise click.UsageError("--backend openai needs --base-url, e.g. http://127.0.0.1:8000/v1")
    spec = RunSpec(
        experiment=experiment,
        model=model,
        benchmarks=bench.split(","),
        mitigation=mitigation,
        step=step,
        limit=limit,
        seed=seed,
        evaluators=evaluators.split(",") if evaluators else None,
        backend=backend,
        base_url=base_url,
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        reference_model=reference_model,
        concurrency=concurrency,
        timeout=timeout,
        decoding=decoding_from_options(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, system_prompt=system_prompt
        ),
        judge_options=judge_options(judge_model, judge_backend, judge_base_url),
        experiment_fields={"capability_target": capability_target} if capability_target is not None else {},
        command="capsafe " + " ".join(sys.argv[1:]),
    )
    with open_store(db_path, create=True) as store:
        try:
            result = run_checkpoint(store, spec, progress=not quiet)
        except KeyboardInterrupt:
            _interrupted(db_path)
    click.echo(result.summary())


@cli.command(name="judge")
@click.option("--evaluators", required=True, help="Comma-separated evaluators to add.")
@click.option("--experiment", "-e", help="Only this experiment.")
@click.option("--benchmark", "-b", help="Only this benchmark.")
@click.option("--reference-model", help="Model for the perplexity metric (default: the experiment's step-0 model).")
@click.option("--dtype", default="auto", show_default=True)
@click.option("--device", default="auto", show_default=True)
@judge_model_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@db_option
def judge_cmd(
    evaluators: str,
    experiment: str | None,
    benchmark: str | None,
    reference_model: str | None,
    dtype: str,
    device: str,
    judge_model: str,
    judge_backend: str,
    judge_base_url: str | None,
    quiet: bool,
    db_path: str,
) -> None:
    """Add evaluators' verdicts to generations already stored (skips what is judged).

    \b
    Examples:
      capsafe judge --evaluators keyword_refusal_broad,coherence --experiment demo
      capsafe judge --evaluators harmbench_cls,llamaguard --judge-backend openai \\
          --judge-base-url http://127.0.0.1:8000/v1 --judge-model llama-guard-3-8b
    """
    from capsafe_core.runner import judge_stored

    options = judge_options(judge_model, judge_backend, judge_base_url)
    with open_store(db_path, create=False) as store:
        try:
            res = judge_stored(
                store,
                evaluators,
                experiment=experiment,
                benchmark=benchmark,
                reference_model=reference_model,
                dtype=dtype,
                device=device,
                progress=not quiet,
                judge_options=options,
            )
        except KeyboardInterrupt:
            _interrupted(db_path)
    click.echo(f"judgments: {res.judgments_added} added, {res.judgments_stored} already stored")


@cli.command(name="finetune")
@click.option("--experiment", "-e", required=True, help="Experiment to store checkpoints in.")
@click.option("--model", required=True, help="Model folder or alias (step 0).")
@click.option(
    "--train",
    "train_file",
    required=True,
    type=click.Path(dir_okay=False),
    help='JSONL of chats: {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}.',
)
@click.option("--mitigation", "-m", default="none", show_default=True, help="Preset: none, lora, safety_mix, lower_lr.")
@click.option("--output-dir", "-o", required=True, type=click.Path(file_okay=False), help="Checkpoint folders.")
@click.option("--capability-benchmark", default="arithmetic", show_default=True)
@click.option("--capability-limit", default=100, show_default=True, type=int)
@click.option("--target", "capability_target", type=float, help="Capability target: stop once reached.")
@click.option("--extra-saves", default=1, show_default=True, type=int, help="Saves after the target is reached.")
@click.option("--save-every", default=10, show_default=True, type=int)
@click.option("--max-steps", default=100, show_default=True, type=int)
@click.option(
    "--lr",
    "learning_rate",
    default=5e-5,
    show_default=True,
    type=float,
    help="Learning rate before the preset's scale (lora ×4, lower_lr ×0.1).",
)
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--max-length", default=192, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--safety-data", type=click.Path(dir_okay=False), help="JSONL of chats mixed in by safety_mix.")
@click.option("--eval-benchmarks", default="", help="Also evaluate every save on these benchmarks.")
@click.option("--eval-limit", type=int, help="Prompts per evaluation benchmark.")
@click.option("--quiet", "-q", is_flag=True)
@db_option
def finetune_cmd(
    experiment: str,
    model: str,
    train_file: str,
    mitigation: str,
    output_dir: str,
    capability_benchmark: str,
    capability_limit: int,
    capability_target: float | None,
    extra_saves: int,
    save_every: int,
    max_steps: int,
    learning_rate: float,
    batch_size: int,
    max_length: int,
    seed: int,
    safety_data: str | None,
    eval_benchmarks: str,
    eval_limit: int | None,
    quiet: bool,
    db_path: str,
) -> None:
    """Fine-tune under a mitigation preset, scoring capability at every save; stop at the target.

    \b
    Example:
      python -c "from capsafe_core import arithmetic as a; import json; \\
        [print(json.dumps({'messages': c})) for c in a.chat_examples(a.train_split(3000))]" > arith.jsonl
      capsafe finetune -e my-exp --model smollm2-135m-instruct --train arith.jsonl -m lora \\
        -o runs/lora --target 0.6 --save-every 10 --eval-benchmarks harmbench,xstest_safe --eval-limit 50
    """
    from capsafe_core.finetune import FinetuneConfig, finetune, read_chat_jsonl

    cfg = FinetuneConfig(
        experiment=experiment,
        model=model,
        train=read_chat_jsonl(train_file),
        output_dir=Path(output_dir),
        mitigation=mitigation,
        capability_benchmark=capability_benchmark,
        capability_limit=capability_limit,
        capability_target=capability_target,
        extra_saves=extra_saves,
        save_every=save_every,
        max_steps=max_steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        safety_data=read_chat_jsonl(safety_data) if safety_data else (),
        eval_benchmarks=[b for b in eval_benchmarks.split(",") if b],
        eval_limit=eval_limit,
        progress=not quiet,
        command="capsafe " + " ".join(sys.argv[1:]),
    )
    with open_store(db_path, create=True) as store:
        try:
            res = finetune(store, cfg)
        except KeyboardInterrupt:
            _interrupted(db_path)
    caps = ", ".join(f"step {s}: {c:.2f}" for s, c in sorted(res.capability.items()))
    reached = f"target reached at step {res.reached_at}" if res.reached_at is not None else "target not reached"
    click.echo(f"capability {caps}; {reached} ({res.seconds:.0f} s)")


@cli.group(name="demo", cls=CapsafeGroup)
def demo_group() -> None:
    """The demo experiment shipped in data/demo.db.

    \b
    Example:
      capsafe demo build
    """


@demo_group.command(name="build")
@click.option("--out", default="data/demo.db", show_default=True, type=click.Path(dir_okay=False))
@click.option(
    "--work-dir",
    default="runs/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Aligned model, checkpoints (deleted after evaluation) and the database being built.",
)
@click.option("--quick", is_flag=True, help="A tiny version (minutes) to check the pipeline; not for shipping.")
@click.option("--quiet", "-q", is_flag=True)
def demo_build_cmd(out: str, work_dir: str, quick: bool, quiet: bool) -> None:
    """Build the demo: align SmolLM2, fine-tune under 4 mitigations, evaluate every checkpoint.

    Took 1 h 57 min on 2 CPU cores; see the README section "The demo experiment".

    \b
    Example:
      capsafe demo build --out data/demo.db
    """
    import dataclasses

    from capsafe_core.demo import DemoConfig, build_demo

    cfg = DemoConfig(
        out=Path(out), work_dir=Path(work_dir), progress=not quiet, command="capsafe " + " ".join(sys.argv[1:])
    )
    if quick:
        cfg = dataclasses.replace(
            cfg,
            align_steps=4,
            max_steps=4,
            save_every=2,
            eval_limit=4,
            min_saves=2,
            extra_saves=0,
            task_examples=64,
            mitigations=("none", "lora"),
            capability_target=1.01,
        )
    summary = build_demo(cfg)
    click.echo(json.dumps(summary, indent=1, default=str))


@cli.command(name="serve")
@click.option("--port", default=8501, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option(
    "--db",
    "db_path",
    envvar="CAPSAFE_DB",
    default=None,
    type=click.Path(dir_okay=False),
    help="Database to open (default: the bundled demo, data/demo.db.gz decompressed to data/demo.db).",
)
def serve_cmd(port: int, host: str, db_path: str | None) -> None:
    """Open the dashboard in the browser (Streamlit).

    \b
    Example:
      capsafe serve --db results.db --port 8501
    """
    import os
    import subprocess

    app = Path(__file__).resolve().parent.parent / "app.py"
    if not app.exists():
        raise click.ClickException(f"No dashboard at {app}; run capsafe from a checkout of the repository")
    env = dict(os.environ)
    if db_path:
        db_path = resolve_db(db_path)
        if not Path(db_path).exists():
            raise click.ClickException(f"No database at {db_path}; create one with: capsafe init --db {db_path}")
        env["CAPSAFE_DB"] = str(Path(db_path).resolve())
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    click.echo(f"capsafe dashboard on http://{host}:{port}")
    sys.exit(subprocess.call(cmd, env=env))


def main() -> None:
    cli(prog_name="capsafe")


if __name__ == "__main__":
    main()
