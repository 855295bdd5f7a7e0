"""Model card: the bundle's MODEL_CARD.md, or the library's card built from its manifest and
metrics (`pneumo.modelcard`: one text, written by the library, shown here)."""

import streamlit as st

from app import state
from pneumo.modelcard import gate_catch_table, model_card


def split_title(card: str, default: str) -> tuple[str, str]:
    """(title, body): the card's own leading "# ..." heading becomes the page's one title."""
    lines = card.lstrip().splitlines()
    if lines and lines[0].startswith("# "):
        return lines[0][2:].strip(), "\n".join(lines[1:]).lstrip()
    return default, card


def main() -> None:
    bundle = state.require_bundle()
    metrics = bundle.metrics()
    card = bundle.text("MODEL_CARD.md")
    built = card is None
    if built:
        card = model_card(bundle.manifest, metrics)
    title, body = split_title(card, f"Model card: {bundle.name}")
    st.title(title)
    if built:
        st.caption("Built from the bundle's manifest.json and metrics.json "
                   "(the bundle has no MODEL_CARD.md).")
    st.markdown(body)
    catch = gate_catch_table(metrics)
    if catch and catch not in card:  # measured after the card was written
        st.subheader("Out-of-population gate: what it catches")
        st.markdown(catch)


if __name__ == "__main__":
    main()
