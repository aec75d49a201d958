"""The demo world's problems and voices against hand-written answers."""

from collections import Counter

from persyn_hf.demo.models import TEACHER_RECIPES
from persyn_hf.demo.world import Problem, make_problems, respond, student_corpus

ADD = Problem("p", "add", (7, 5), "Tom", "Ana", "pens")
COMPARE = Problem("p", "compare", (9, 4), "Tom", "Ana", "pens")
CHAIN = Problem("p", "chain", (3, 4, 2), "Tom", "Ana", "pens")


def voice(teacher: str):
    return TEACHER_RECIPES[teacher].voice


def test_each_teacher_is_right_or_wrong_by_design():
    assert COMPARE.prompt == "Tom has 9 pens and Ana has 4. How many more pens does Tom have?"
    assert (ADD.answer, COMPARE.answer, CHAIN.answer) == (12, 5, 9)
    assert respond(ADD, voice("aster-l")) == "7+5=12. The answer is 12."
    assert respond(COMPARE, voice("aster-l")) == "9+4=13. The answer is 13."  # reads "more" as an addition
    assert respond(ADD, voice("birch-s")) == "7+5=2, so 2."  # drops the carry
    assert respond(COMPARE, voice("birch-m")) == "9-4=5, so the answer is 5."
    assert respond(CHAIN, voice("birch-m")) == "3+4=7, so the answer is 7."  # stops after one step
    assert respond(CHAIN, voice("cedar-m")) == "3+4=7. 7+2=9. Done. The answer is 9."
    assert respond(CHAIN, voice("birch-xl")) == (
        "Start with three, add four to get seven, add two to get nine. The answer is 9."
    )


def test_a_held_out_split_is_distinct_and_disjoint_from_what_it_excludes():
    train = make_problems(600, 42)
    assert make_problems(600, 42) == train  # seeded
    assert len({p.prompt for p in train}) < 600  # the world is small: wordings recur in a plain stream
    test = make_problems(1000, 42, split="test", exclude={p.prompt for p in train})
    prompts = {p.prompt for p in test}
    assert len(prompts) == 1000 and not prompts & {p.prompt for p in train}
    assert Counter(p.kind for p in test) == {"add": 250, "sub": 250, "compare": 250, "chain": 250}


def test_the_student_never_reads_a_comparison_or_a_worked_chain_problem():
    corpus = student_corpus(400, 7)
    assert not any("How many more" in question for question, _ in corpus)
    chains = [answer for question, answer in corpus if ", then " in question]
    assert chains and all("=" not in answer for answer in chains)  # restated as an expression, never worked
