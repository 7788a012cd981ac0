"""``capsafe run``, ``capsafe judge`` and ``capsafe finetune``: models evaluated and trained, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from capsafe_core.cli.base import cli, command_line, db_option, judge_model_options, open_store, resumable


@cli.command(name="run")
@click.option("--experiment", "-e", required=True, help="Experiment name (created if new).")
@click.option("--mitigation", "-m", default="none", show_default=True, help="Mitigation of this checkpoint.")
@click.option("--step", "-s", default=0, show_default=True, type=int, help="Training step (0 = base model).")
@click.option(
    "--model",
    required=True,
    help="Model folder, PEFT adapter folder, Hugging Face id (org/name[@revision], from the local cache first), "
    ".gguf file or alias (smollm2-135m-instruct); with --backend openai, the server's model name.",
)
@click.option("--benchmarks", "-b", "bench", required=True, help="Comma-separated benchmarks or groups.")
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of the fine-tuning run (repeated runs of a mitigation).",
)
@click.option("--limit", type=int, help="A stable seeded subset of N prompts per benchmark.")
@click.option("--sampling-seed", default=0, show_default=True, type=int, help="Seed of the subset and of sampling.")
@click.option("--evaluators", help="Comma-separated evaluators (default: every default evaluator).")
@click.option("--backend", default="transformers", show_default=True, type=click.Choice(["transformers", "openai"]))
@click.option("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (vLLM, llama.cpp).")
@click.option("--max-new-tokens", default=128, show_default=True, type=int)
@click.option("--temperature", default=0.0, show_default=True, type=float, help="0 = greedy.")
@click.option("--top-p", default=1.0, show_default=True, type=float)
@click.option("--system-prompt", help="System message before every prompt.")
@click.option(
    "--batch-size", type=int, help="Prompts per batch [default: from free memory, at most 64; halved on OOM]."
)
@click.option("--dtype", default="auto", show_default=True, help="auto (bf16 where supported), float32, bfloat16.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--device-map", type=click.Choice(["auto"]), help="Spread a model too large for one GPU (accelerate).")
@click.option("--base-model", help="The base of a PEFT adapter (Hub id or folder), instead of adapter_config.json's.")
@click.option("--trust-remote-code", is_flag=True, help="Run the model's own code (only for sources you trust).")
@click.option("--chat-template", type=click.Path(dir_okay=False), help="Jinja chat template file for the model.")
@click.option("--no-chat-template", is_flag=True, help="Send prompts as plain text (no chat template).")
@click.option("--reference-model", help="Model for the perplexity metric (default: the experiment's step-0 model).")
@click.option("--concurrency", default=8, show_default=True, type=int, help="Parallel requests (openai backend).")
@click.option("--timeout", default=120.0, show_default=True, type=float, help="Seconds per request (openai).")
@click.option("--capability-target", type=float, help="Store the experiment's capability target.")
@judge_model_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@db_option
def run_cmd(db_path: str, quiet: bool, **options: Any) -> None:
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
    from capsafe_core.runner import run_checkpoint, run_spec

    spec = run_spec(options, command=command_line())
    with open_store(db_path, create=True) as store, resumable(db_path):
        result = run_checkpoint(store, spec, progress=not quiet)
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
    quiet: bool,
    db_path: str,
    **judge_model: Any,
) -> None:
    """Add evaluators' verdicts to generations already stored (skips what is judged).

    \b
    Examples:
      capsafe judge --evaluators keyword_refusal_broad,coherence --experiment demo
      capsafe judge --evaluators harmbench_cls,llamaguard --judge-backend openai \\
          --judge-base-url http://127.0.0.1:8000/v1 --judge-model llama-guard-3-8b
    """
    from capsafe_core.runner import judge_options, judge_stored

    options = judge_options(**judge_model)
    with open_store(db_path, create=False) as store, resumable(db_path):
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
    click.echo(f"judgments: {res.judgments_added} added, {res.judgments_stored} already stored")
    for name, why in res.skipped.items():
        click.echo(f"{name}: not run ({why})")


@cli.command(name="finetune")
@click.option("--experiment", "-e", required=True, help="Experiment to store checkpoints in.")
@click.option("--model", required=True, help="Model folder, Hugging Face id or alias (step 0).")
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
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of this run (data order, initialisation); its checkpoints are stored under it.",
)
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
        command=command_line(),
    )
    with open_store(db_path, create=True) as store, resumable(db_path):
        res = finetune(store, cfg)

    caps = ", ".join(f"step {s}: {c:.2f}" for s, c in sorted(res.capability.items()))
    reached = f"target reached at step {res.reached_at}" if res.reached_at is not None else "target not reached"
    click.echo(f"capability {caps}; {reached} ({res.seconds:.0f} s)")
