"""The newcomer's documents (issue 11): README "Concepts" and its two sequence diagrams, HANDOFF
"How to extend to gRPC" and "How to swap a sketch" -- present, and pointing at code and tests that
exist and say what the code does (a renamed method, test or sketch fails here, not in a reader's
hands).

The diagrams are checked structurally (declared participants only, balanced ``alt``/``end``); they
were also parsed with mermaid 11's own parser once, by hand (it needs a DOM, so not in the suite).
"""

from __future__ import annotations

import ast
import re

from tests.support import ROOT

README = (ROOT / "README.md").read_text()
HANDOFF = (ROOT / "HANDOFF.md").read_text()


def section(text: str, heading: str) -> str:
    assert f"\n## {heading}\n" in text, f"missing section: ## {heading}"
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_concepts_explain_each_idea_in_plain_words():
    concepts = section(README, "Concepts, in plain words")
    for term in ("Turnstile stream", "User-level differential privacy", "Continual release", "Flippancy", "budget"):
        paragraph = re.search(rf"\*\*(The )?{term}\.\*\*(.*?)(?=\n- \*\*|\Z)", concepts, re.S | re.I)
        assert paragraph and len(paragraph.group(2).split()) >= 30, f"{term}: a bullet of its own, in words"


def sequence_diagrams() -> list[str]:
    blocks = re.findall(r"```mermaid\n(.*?)```", README, re.S)
    return [b for b in blocks if b.lstrip().startswith("sequenceDiagram")]


ARROW = re.compile(r"^\s*(\w+)\s*(?:-{1,2}>>|-{1,2}>|-{1,2}x|-{1,2}\))\s*[+-]?(\w+)\s*:")


def test_an_ingest_and_a_release_are_drawn_as_sequence_diagrams():
    diagrams = sequence_diagrams()
    assert any("POST /event" in d and "journal" in d for d in diagrams), "the ingest's sequence diagram"
    assert any("accountant" in d and "release actor" in d for d in diagrams), "the release's sequence diagram"
    for d in diagrams:
        lines = d.splitlines()[1:]
        declared = {m.group(1) for line in lines if (m := re.match(r"\s*(?:participant|actor)\s+(\w+)", line))}
        messages = [m for line in lines if (m := ARROW.match(line))]
        assert len(messages) >= 6, d
        for m in messages:
            assert {m.group(1), m.group(2)} <= declared, f"undeclared participant in {m.group(0)!r}"
        opened = sum(bool(re.match(r"\s*(alt|opt|loop|par|critical|rect)\b", line)) for line in lines)
        closed = sum(line.strip() == "end" for line in lines)
        assert opened == closed, "every alt/opt/loop has its end"


def functions(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_grpc_section_matches_the_transport_it_describes():
    from aiohttp import web

    from gateway import rpc

    text = " ".join(section(HANDOFF, "How to extend to gRPC").split())
    assert "gateway/rpc.py" in text and "--grpc-port" in text
    listed = re.search(r"DpDau/\{([^}]*)\}", text)
    assert listed, "the section lists the methods"
    methods = {m.strip() for m in listed.group(1).split(",")}
    assert methods == set(rpc.handlers(web.Application())) == set(rpc.SCOPES)
    # "`Ingest`, `Erase`, `ErasureStatus` need `ingest`": the scope each method needs, as the code says
    said = {
        method: scope
        for names, scope in re.findall(r"((?:`\w+`, )*`\w+`) need `(\w+)`", text)
        for method in re.findall(r"`(\w+)`", names)
    }
    assert said == rpc.SCOPES, said
    named_tests = re.findall(r"`(test_\w+)`", text)
    assert named_tests, "the section names the tests that prove it"
    have = functions("tests/gateway/test_rpc.py") | functions("tests/e2e/test_grpc_process.py")
    assert set(named_tests) <= have, set(named_tests) - have
    for path in re.findall(r"`((?:gateway|actors|tests)/[\w/]+\.py)`", text):
        assert (ROOT / path).exists(), path


def test_sketch_swap_section_names_every_sketch_and_its_test():
    from actors.sketches.registry import SKETCHES

    text = section(HANDOFF, "How to swap a sketch")
    for impl in SKETCHES:
        assert f"`{impl}`" in text, impl
    assert "SKETCH_IMPL" in text and "SKETCH_LG_K" in text
    assert "tests/e2e/test_sketch_swap.py" in text and (ROOT / "tests/e2e/test_sketch_swap.py").exists()
