"""The Streamlit dashboard's pages and helpers (run it with `streamlit run streamlit_app.py`).

Page files (home.py, predict.py, ...) are run by `st.navigation`, which executes them with
``__name__ == "__main__"``; importing one (tests do) only defines its functions. Shared state,
caching and bundle discovery live in `app.state`. Nothing here imports TensorFlow at import
time: only the Predict and Batch pages load the model, through `state.get_predictor`.
"""
