from pathlib import Path

from cases.diagram import render
from cases.models import Entrustment, EntrustmentState

DOC = Path(__file__).resolve().parent.parent / "docs" / "state-diagram.md"


def test_the_documented_diagram_is_the_one_the_code_generates():
    assert DOC.read_text(encoding="utf-8") == render(), "run `make diagram` and commit docs/state-diagram.md"


def test_the_diagram_shows_every_transition_of_the_entrustment():
    text = render()
    for t in Entrustment._meta.get_field("state").get_all_transitions(Entrustment):
        assert f": {t.name}" in text
    for state in EntrustmentState.values:
        assert f"    {state}: " in text
