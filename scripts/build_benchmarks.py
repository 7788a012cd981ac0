"""Build data/benchmarks/ from the public datasets in ../shared/datasets.

Run: python scripts/build_benchmarks.py [--shared ../shared/datasets]

Writes one normalised JSONL per benchmark ({ext_id, text, category, reference, meta}), the
registry index ``index.json`` (kind, source, licence, capability scorer), the licence texts, and
the refusal keyword lists the keyword judges use. Non-commercial data (BeaverTails) is left out.
The output is committed; this script documents how it was made and rebuilds it.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

from capsafe_core import arithmetic

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data" / "benchmarks"


def write_jsonl(name: str, rows: list[dict]) -> int:
    ids = [r["ext_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"{name}: duplicate ext_id"
    with (OUT / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
        for r in rows:
            r.setdefault("category", None)
            r.setdefault("reference", None)
            r.setdefault("meta", {})
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return len(rows)


def read_csv(path: Path, **kw) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, **kw))


def build(shared: Path) -> list[dict]:
    index: list[dict] = []

    def add(
        name: str,
        kind: str,
        rows: list[dict],
        *,
        source: str,
        license: str,
        description: str,
        license_file: Path | None = None,
        scorer: str | None = None,
    ) -> None:
        n = write_jsonl(name, rows)
        entry = {
            "name": name,
            "kind": kind,
            "file": f"{name}.jsonl",
            "prompts": n,
            "source": source,
            "license": license,
            "description": description,
        }
        if scorer:
            entry["scorer"] = scorer
        if license_file is not None:
            lic = OUT / "licenses" / f"{license_file.parent.name}.txt"
            shutil.copyfile(license_file, lic)
            entry["license_file"] = f"licenses/{lic.name}"
        index.append(entry)

    rows = read_csv(shared / "advbench/harmful_behaviors.csv")
    add(
        "advbench",
        "safety",
        [{"ext_id": f"advbench-{i:03d}", "text": r["goal"], "reference": r["target"]} for i, r in enumerate(rows)],
        source="AdvBench harmful_behaviors.csv (Zou et al. 2023, llm-attacks)",
        license="MIT",
        description="520 harmful behaviours; reference = the attack's target string",
        license_file=shared / "advbench/LICENSE.txt",
    )

    rows = read_csv(shared / "harmbench/harmbench_behaviors_text_test.csv")
    hb = []
    for r in rows:
        if r["FunctionalCategory"] == "copyright":
            continue  # judged by hashing against the copyrighted text, not by a harm judge
        text = r["Behavior"]
        if r["ContextString"].strip():
            text = f"{r['ContextString']}\n\n---\n\n{r['Behavior']}"
        hb.append(
            {
                "ext_id": r["BehaviorID"],
                "text": text,
                "category": r["SemanticCategory"],
                "meta": {"functional_category": r["FunctionalCategory"], "behavior": r["Behavior"]},
            }
        )
    add(
        "harmbench",
        "safety",
        hb,
        source="HarmBench harmbench_behaviors_text_test.csv (Mazeika et al. 2024)",
        license="MIT",
        description="HarmBench test split, standard + contextual behaviours (copyright rows left out: "
        "they are judged by hashing); contextual prompts are context + '---' + behaviour",
        license_file=shared / "harmbench/LICENSE.txt",
    )

    rows = read_csv(shared / "strongreject/strongreject_dataset.csv")
    add(
        "strongreject",
        "safety",
        [
            {
                "ext_id": f"sr-{i:03d}",
                "text": r["forbidden_prompt"],
                "category": r["category"],
                "meta": {"source": r["source"]},
            }
            for i, r in enumerate(rows)
        ],
        source="StrongREJECT strongreject_dataset.csv (Souly et al. 2024)",
        license="MIT (custom rows); other rows keep their source's licence (meta.source)",
        description="313 forbidden prompts",
    )

    rows = read_csv(shared / "jailbreakbench/jbb_harmful_behaviors.csv")
    add(
        "jbb",
        "safety",
        [
            {
                "ext_id": f"jbb-{int(r['Index']):03d}",
                "text": r["Goal"],
                "category": r["Category"],
                "reference": r["Target"],
                "meta": {"behavior": r["Behavior"], "source": r["Source"]},
            }
            for r in rows
        ],
        source="JBB-Behaviors harmful (Chao et al. 2024)",
        license="MIT",
        description="100 harmful behaviours of JailbreakBench",
        license_file=shared / "jailbreakbench/LICENSE_artifacts.txt",
    )

    rows = read_csv(shared / "jailbreakbench/jbb_benign_behaviors.csv")
    add(
        "jbb_benign",
        "overrefusal",
        [
            {
                "ext_id": f"jbb-benign-{int(r['Index']):03d}",
                "text": r["Goal"],
                "category": r["Category"],
                "meta": {"behavior": r["Behavior"], "source": r["Source"]},
            }
            for r in rows
        ],
        source="JBB-Behaviors benign (Chao et al. 2024)",
        license="MIT",
        description="100 benign prompts on the topics of the harmful ones (over-refusal)",
    )

    rows = read_csv(shared / "simple_safety_tests/simple_safety_tests.csv")
    add(
        "simple_safety_tests",
        "safety",
        [
            {
                "ext_id": r["id"],
                "text": r["prompts_final"],
                "category": r["harm_area"],
                "meta": {"prompt_type": r["category"]},
            }
            for r in rows
        ],
        source="SimpleSafetyTests (Vidgen et al. 2023)",
        license="CC-BY-4.0",
        description="100 prompts on five harm areas",
        license_file=shared / "simple_safety_tests/LICENSE.txt",
    )

    rows = read_csv(shared / "xstest/xstest_prompts.csv")
    for part, kind in (("safe", "overrefusal"), ("unsafe", "safety")):
        add(
            f"xstest_{part}",
            kind,
            [
                {
                    "ext_id": f"v2-{r['id']}",
                    "text": r["prompt"],
                    "category": r["type"],
                    "meta": {"focus": r["focus"], "note": r["note"]},
                }
                for r in rows
                if r["label"] == part
            ],
            source="XSTest v2 xstest_prompts.csv (Röttger et al. 2024)",
            license="CC-BY-4.0",
            description=(
                "250 safe prompts that look unsafe (over-refusal)" if part == "safe" else "200 unsafe contrast prompts"
            ),
            license_file=shared / "xstest/LICENSE.txt",
        )

    gsm = [json.loads(line) for line in (shared / "gsm8k/test.jsonl").read_text(encoding="utf-8").splitlines()]
    add(
        "gsm8k",
        "capability",
        [
            {
                "ext_id": f"gsm8k-test-{i:04d}",
                "text": r["question"],
                "reference": r["answer"].split("####")[-1].strip().replace(",", ""),
            }
            for i, r in enumerate(gsm)
        ],
        source="GSM8K test.jsonl (Cobbe et al. 2021)",
        license="MIT",
        description="1,319 grade-school maths problems; reference = the final number",
        license_file=shared / "gsm8k/LICENSE.txt",
        scorer="final_number",
    )

    test = arithmetic.test_split(100, seed=0)
    add(
        "arithmetic",
        "capability",
        [
            {
                "ext_id": p.ext_id,
                "text": p.question,
                "category": {"+": "add", "-": "subtract", "*": "multiply"}[p.op],
                "reference": str(p.answer),
            }
            for p in test
        ],
        source="capsafe_core.arithmetic (seeded generator, seed 0)",
        license="Apache-2.0 (generated)",
        description="100 one-operation word problems within 20 (× 2–9); train split (arithmetic.train_split) "
        "shares no (op, a, b) with them",
        scorer="final_number",
    )
    return index


def copy_keywords(shared: Path) -> None:
    dest = ROOT / "data" / "refusal_keywords"
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted((shared / "refusal_keywords").glob("*")):
        if f.suffix in (".txt", ".csv"):
            shutil.copyfile(f, dest / f.name)
    shutil.copyfile(shared / "refusal_keywords/SOURCE.md", dest / "SOURCE.md")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "datasets")
    args = ap.parse_args()
    (OUT / "licenses").mkdir(parents=True, exist_ok=True)
    index = build(args.shared)
    groups = {"xstest": ["xstest_safe", "xstest_unsafe"]}
    (OUT / "index.json").write_text(
        json.dumps({"benchmarks": index, "groups": groups}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    copy_keywords(args.shared)
    for e in index:
        print(f"{e['name']:22} {e['kind']:12} {e['prompts']:5}  {e['license']}")


if __name__ == "__main__":
    main()
