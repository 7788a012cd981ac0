"""Options are explicit: a misspelt evaluator or backend option is a one-line error naming it and the
accepted ones; each evaluator declares exactly the options its factory takes."""

from __future__ import annotations

import inspect

import pytest
from click.testing import CliRunner

from capsafe_core import evaluators
from capsafe_core.backends import load_backend
from capsafe_core.errors import BadInput


def test_misspelt_evaluator_option_is_named():
    with pytest.raises(BadInput, match=r"Unknown evaluator option 'refrence_model'; the options are: reference_model"):
        evaluators.build("keyword_refusal", refrence_model="x")
    with pytest.raises(BadInput, match=r"Evaluator 'keyword_refusal' takes no option 'device'; its options: none"):
        evaluators.check_options("keyword_refusal", {"device": "cpu"})


def test_misspelt_backend_option_is_named():
    with pytest.raises(BadInput, match=r"Unknown option 'batch_sz' for the transformers backend; its options are: "):
        load_backend("transformers", model="smollm2-135m-instruct", batch_sz=8)
    with pytest.raises(BadInput, match=r"Unknown option 'concurency' for the openai backend; .*concurrency"):
        load_backend("openai", model="m", concurency=2)


def test_each_evaluator_declares_the_options_its_factory_takes():
    for name, spec in evaluators.registry().items():
        params = set(inspect.signature(spec.factory).parameters)
        assert params == set(spec.options), name


def test_evaluator_option_error_is_one_line_on_the_command_line(tmp_path):
    from capsafe_core.cli import cli

    db = tmp_path / "o.db"
    res = CliRunner().invoke(
        cli, ["judge", "--evaluators", "keyword_refusal", "--judge-backend", "bogus", "--db", str(db)]
    )
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "bogus" in lines[0]
