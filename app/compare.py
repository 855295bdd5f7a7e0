"""Compare two models (placeholder until the compare page lands)."""

import streamlit as st


def main() -> None:
    st.title("Compare two models")


if __name__ == "__main__":
    main()
