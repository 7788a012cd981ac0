"""``capsafe import table|inspect|lm-eval|harmbench|jbb``: results other tools wrote, in one checked transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from capsafe_core.cli.base import CapsafeGroup, cli, db_option, open_store, replace_option


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
    help="Read FIELD from COLUMN. FIELD: experiment, mitigation, seed, step, model, benchmark, prompt_id, "
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
    type=click.Choice(["safety", "overrefusal", "capability"]),
    help="Kind of a new benchmark [default: capability where every verdict on it is a capability verdict, "
    "else safety].",
)
@replace_option
@db_option
def import_table_cmd(
    file: str,
    maps: tuple[str, ...],
    sets: tuple[str, ...],
    judge_kinds: tuple[str, ...],
    judge_version: str,
    benchmark_kind: str | None,
    replace: bool,
    db_path: str,
) -> None:
    """Import a CSV, JSONL or Parquet file, one generation per row.

    Columns named like a field are used without --map. Unset, experiment and benchmark are
    the file name, mitigation is 'none', seed and step are 0. Prompts of a shipped benchmark are matched
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
    """``--experiment/--mitigation/--seed/--step/--benchmark`` of the tool importers."""
    f = click.option("--benchmark", "-b", help="Store the prompts under this benchmark.")(f)
    f = click.option("--step", type=int, help="Checkpoint step. [default: 0]")(f)
    f = click.option(
        "--seed", type=int, help="Seed of the fine-tuning run (repeated runs of one mitigation). [default: 0]"
    )(f)
    f = click.option("--mitigation", "-m", help="Mitigation. [default: from the file, else none]")(f)
    return click.option("--experiment", "-e", help="Experiment. [default: the model's name in the file]")(f)


def _checkpoint(
    experiment: str | None, mitigation: str | None, seed: int | None, step: int | None, benchmark: str | None
) -> Any:
    from capsafe_core.importers.common import CheckpointArgs

    return CheckpointArgs(experiment, mitigation, step, benchmark, seed)


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
    seed: int | None,
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
            _checkpoint(experiment, mitigation, seed, step, benchmark),
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
    seed: int | None,
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
        result = import_lm_eval(
            store, path, _checkpoint(experiment, mitigation, seed, step, benchmark), replace=replace
        )
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
    seed: int | None,
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
            store,
            file,
            _checkpoint(experiment, mitigation, seed, step, benchmark),
            behaviors=behaviors,
            replace=replace,
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
    seed: int | None,
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
        result = import_jbb(store, file, _checkpoint(experiment, mitigation, seed, step, benchmark), replace=replace)
    click.echo(result.summary())
