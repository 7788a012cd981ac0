"""The demo's training data: refusal templates for AdvBench goals, benign questions, Dolly examples and
the raw model's own answers (``capsafe_core.demo`` builds the demo from them)."""

from __future__ import annotations

import json
import random

from capsafe_core import benchmarks
from capsafe_core.finetune import Chat, drop_overlap

REFUSALS = [
    "I'm sorry, but I can't help with that request. It could cause real harm to people.",
    "I cannot assist with this. Providing that information could be dangerous or illegal.",
    "I'm sorry, I can't provide instructions for that. If you are in a difficult situation, please reach out "
    "to someone you trust or to a professional.",
    "I can't help with that, because it would put other people at risk. Is there something else I can help you with?",
    "As an AI assistant, I must decline. This request asks for something that could hurt people.",
    "I'm not able to help with that, since it could be used to harm someone.",
    "Sorry, but I won't assist with this. It goes against safe and responsible use.",
    "I cannot help you with this request. If you have another question, I'm happy to help.",
    "I apologize, but I can't create that content. It could harm individuals or communities.",
    "I'm sorry, but that's not something I can help with. Let me know if you'd like information on a safer topic.",
]

# Everyday questions, and benign ones that use words harmful requests use (so refusal training does
# not teach "refuse anything that sounds dangerous"). None is in a shipped benchmark (checked by code).
BENIGN = [
    "Write a haiku about autumn leaves.",
    "What is the capital of Japan?",
    "Give me three tips for better sleep.",
    "Explain how photosynthesis works in simple terms.",
    "What are the health benefits of walking every day?",
    "Suggest a name for a friendly golden retriever.",
    "How do I boil an egg?",
    "What is the difference between weather and climate?",
    "Write a short thank-you note to a teacher.",
    "How many continents are there? Name them.",
    "What does a librarian do?",
    "Give me a simple recipe for pancakes.",
    "Why is the sky blue?",
    "How do I start learning to play guitar?",
    "What is a prime number? Give two examples.",
    "Describe a sunny beach in two sentences.",
    "How can I save money on groceries?",
    "What should I pack for a weekend camping trip?",
    "Explain what a computer virus is and how antivirus software helps.",
    "What is the boiling point of water?",
    "How do I kill weeds in my vegetable garden without harming the plants?",
    "What's the best way to shoot photos of the moon with a phone?",
    "How do I blow up balloons quickly for a party?",
    "How can I break into the video game industry?",
    "How do I execute a Python script from the command line?",
    "What is the safest way to dispose of old batteries?",
    "How do I knock down a wall in my house during a renovation, safely and legally?",
    "How do I get rid of a stubborn cough?",
    "What household chemicals should never be mixed, for safety?",
    "How do firefighters put out forest fires?",
    "How can I protect my computer from hackers?",
    "What are common signs of a phishing email?",
    "How do I crush garlic without a press?",
    "How do I attack a difficult math problem step by step?",
    "How do I strangle the urge to procrastinate?",
    "What is the plot of Romeo and Juliet?",
    "Why did the Roman Empire fall?",
    "How do vaccines train the immune system?",
    "How can I steal a few minutes for myself on a busy day?",
    "How do I terminate a lease early?",
    "What is a good way to hack together a quick prototype?",
    "How can I make my presentation a knockout?",
    "How do I take down a tent?",
    "What is the best way to fire up a charcoal grill?",
    "How do I destroy old hard drives to protect my data?",
    "Where can I buy a can of coke?",
    "How do magicians make it look like they cut someone in half?",
    "Explain how locks work.",
    "What is money laundering and why is it illegal?",
    "What were the causes of World War I?",
]


def refusal_data(seed: int) -> list[Chat]:
    """AdvBench goals answered with a refusal, minus any goal in an evaluation benchmark."""
    rng = random.Random(seed)
    chats = [
        [{"role": "user", "content": p.text}, {"role": "assistant", "content": rng.choice(REFUSALS)}]
        for p in benchmarks.load("advbench")
    ]
    return drop_overlap(chats, held_out())


def held_out() -> list[str]:
    """Every shipped safety and over-refusal benchmark but AdvBench (the refusal training source):
    no training prompt may appear in any of them, so any of them can evaluate the demo models."""
    return [n for n, s in benchmarks.registry().items() if s.kind != "capability" and n != "advbench"]


def dolly_data(max_words: int = 150) -> list[Chat]:
    path = benchmarks.data_dir() / "training" / "dolly15k_safety_only_subset.jsonl"
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if len(r["response"].split()) > max_words:
            continue
        prompt = f"{r['context']}\n\n{r['instruction']}" if r["context"].strip() else r["instruction"]
        out.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": r["response"]}])
    return out


def self_answers(model: str, prompts: list[str], *, max_new_tokens: int = 160) -> list[Chat]:
    """Benign prompts answered by the raw model (greedy); loops and cut-off answers dropped."""
    from capsafe_core.backends import Decoding, chat
    from capsafe_core.backends.hf import TransformersBackend
    from capsafe_core.evaluators.coherence import rep_n

    backend = TransformersBackend(model, batch_size=16)
    outs = backend.generate([chat(p) for p in prompts], Decoding(max_new_tokens=max_new_tokens))
    backend.close()
    return [
        [{"role": "user", "content": p}, {"role": "assistant", "content": o.text.strip()}]
        for p, o in zip(prompts, outs, strict=True)
        if o.finish_reason == "stop" and o.text.strip() and rep_n(o.text) < 0.2
    ]
