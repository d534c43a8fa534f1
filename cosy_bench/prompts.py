"""The five CoSy prompt templates (in the order of the authors' code)."""

TEMPLATES: dict[str, str] = {
    "p1": "a",
    "p2": "a painting of",
    "p3": "photo of",
    "p4": "realistic photo of",
    "p5": "realistic photo of a close up of",
}


def make_prompt(template: str, explanation: str) -> str:
    """``"{template} {explanation}"`` as in CoSy; ``template`` is a key of TEMPLATES or raw text."""
    text = TEMPLATES.get(template, template)
    return f"{text} {explanation}".strip()
