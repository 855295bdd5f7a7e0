"""Model card: the library's card built from the bundle's manifest and metrics
(`pneumo.modelcard`: one text, written by the library, shown here - in today's words, so that
it names the served model's operating point as every page does), or a MODEL_CARD.md the
bundle's authors wrote by hand."""

import streamlit as st

from app import state
from pneumo.modelcard import gate_catch_table, model_card, written_by_library


def split_title(card: str, default: str) -> tuple[str, str]:
    """(title, body): the card's own leading "# ..." heading becomes the page's one title."""
    lines = card.lstrip().splitlines()
    if lines and lines[0].startswith("# "):
        return lines[0][2:].strip(), "\n".join(lines[1:]).lstrip()
    return default, card


def main() -> None:
    bundle = state.require_bundle()
    metrics = bundle.metrics()
    stored = bundle.text("MODEL_CARD.md")
    built = stored is None or written_by_library(stored)
    card = model_card(bundle.manifest, metrics) if built else stored
    title, body = split_title(card, f"Model card: {bundle.name}")
    st.title(title)
    if built:
        st.caption("Built from the bundle's manifest.json and metrics.json"
                   + (" (the bundle has no MODEL_CARD.md)." if stored is None else "."))
    st.markdown(body)
    catch = gate_catch_table(metrics)
    if catch and catch not in card:  # measured after the card was written
        st.subheader("Out-of-population gate: what it catches")
        st.markdown(catch)


if __name__ == "__main__":
    main()
