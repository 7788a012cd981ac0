import json

from capsafe_core import arithmetic, benchmarks

REQUIRED = {
    "advbench": "safety",
    "harmbench": "safety",
    "strongreject": "safety",
    "jbb": "safety",
    "simple_safety_tests": "safety",
    "xstest_safe": "overrefusal",
    "xstest_unsafe": "safety",
    "jbb_benign": "overrefusal",
    "gsm8k": "capability",
    "arithmetic": "capability",
}


def test_registry_has_every_required_benchmark_with_its_kind():
    reg = benchmarks.registry()
    for name, kind in REQUIRED.items():
        assert reg[name].kind == kind
        assert reg[name].license
        assert len(benchmarks.load(name)) == reg[name].prompts > 0
    assert benchmarks.expand("xstest") == ["xstest_safe", "xstest_unsafe"]


def test_capability_benchmarks_name_a_registered_scorer():
    from capsafe_core import evaluators

    for spec in benchmarks.registry().values():
        if spec.kind == "capability":
            assert evaluators.get(spec.scorer).kind == "capability"


def test_no_non_commercial_data_shipped():
    for spec in benchmarks.registry().values():
        assert "NC" not in spec.license and "non-commercial" not in spec.license.lower()


def test_prompts_are_normalised_and_unique():
    for name in REQUIRED:
        prompts = benchmarks.load(name)
        assert len({p.ext_id for p in prompts}) == len(prompts)
        assert all(p.text.strip() for p in prompts)
    assert all(p.reference for p in benchmarks.load("gsm8k"))
    assert benchmarks.load("gsm8k")[0].reference == "18"


def test_limit_is_stable_and_grows_by_adding():
    prompts = benchmarks.load("advbench")
    a = benchmarks.select(prompts, limit=20)
    assert a == benchmarks.select(list(reversed(prompts)), limit=20)
    b = benchmarks.select(prompts, limit=40)
    assert set(p.ext_id for p in a) <= set(p.ext_id for p in b)
    assert benchmarks.select(prompts, limit=20, seed=1) != a


def test_arithmetic_splits_are_disjoint_and_shipped_test_matches_generator():
    test = arithmetic.test_split(100, seed=0)
    train = arithmetic.train_split(3000, seed=0)
    assert not {(p.op, p.a, p.b) for p in test} & {(p.op, p.a, p.b) for p in train}
    shipped = benchmarks.load("arithmetic")
    assert [p.text for p in shipped] == [p.question for p in test]
    assert [p.reference for p in shipped] == [str(p.answer) for p in test]
    assert {p.category for p in shipped} == {"add", "subtract", "multiply"}
    assert train[0].target.endswith(f"The answer is {train[0].answer}.")


def test_index_json_matches_files():
    index = json.loads((benchmarks.data_dir() / "benchmarks" / "index.json").read_text())
    for entry in index["benchmarks"]:
        assert (benchmarks.data_dir() / "benchmarks" / entry["file"]).exists()
