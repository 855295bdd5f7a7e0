"""pneumo dashboard: `streamlit run streamlit_app.py` (repo root; also the Community Cloud entry).

The entrypoint only routes: page config, the model picker in the sidebar, and the pages
(app/*.py), which stay thin over the `pneumo` library. Set $PNEUMO_MODELS_DIR to serve bundles
from another folder and $PNEUMO_SAMPLES_DIR to offer sample images on the Predict page.
"""

from pathlib import Path

import streamlit as st

from app import widgets

HERE = Path(__file__).resolve().parent
# On a phone Streamlit stacks every column; rows of metrics made with widgets.metric_columns
# (keyed "pair-…") stay side by side, so pairs read as pairs; charts may not overflow.
PHONE_CSS = """<style>
@media (max-width: 640px) {
  [class*="st-key-pair-"] [data-testid="stHorizontalBlock"] {
    flex-wrap: nowrap !important; gap: 0.75rem !important; }
  [class*="st-key-pair-"] [data-testid="stColumn"] {
    min-width: 0 !important; flex: 1 1 0 !important; width: auto !important; }
  [class*="st-key-pair-"] [data-testid="stMetricValue"] { font-size: 1.6rem !important; }
  [data-testid="stPlotlyChart"] { max-width: 100% !important; overflow: hidden; }
}
</style>"""


def favicon():
    """The tab icon, drawn here: Streamlit's emoji icons come from a CDN that offline hospital
    networks cannot reach, and a drawn image needs no file in the repository."""
    from PIL import Image, ImageDraw

    icon = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((2, 2, 61, 61), radius=12, fill=(22, 60, 110, 255))
    for left in (True, False):  # two lung fields either side of the mediastinum
        x0, x1 = (12, 29) if left else (35, 52)
        draw.ellipse((x0, 12, x1, 54), fill=(235, 240, 248, 255))
    draw.rectangle((30, 8, 34, 40), fill=(235, 240, 248, 255))  # trachea
    return icon


def build_navigation():
    """The sectioned page menu; returns the page to run."""
    def page(file: str, title: str, icon: str, **kw):
        return st.Page(HERE / "app" / file, title=title, icon=f":material/{icon}:", **kw)

    return st.navigation({
        "": [page("home.py", "Home", "home", default=True)],
        "Use the model": [
            page("predict.py", "Predict", "radiology", url_path="predict"),
            page("batch.py", "Batch", "folder_zip", url_path="batch"),
        ],
        "Evaluate the model": [
            page("evaluate.py", "Evaluate on your films", "fact_check", url_path="evaluate"),
            page("compare.py", "Compare two models", "compare_arrows", url_path="compare"),
            page("confusion.py", "Confusion matrix", "grid_view", url_path="confusion"),
            page("curves.py", "ROC & PR curves", "show_chart", url_path="curves"),
            page("calibration.py", "Calibration", "target", url_path="calibration"),
            page("training.py", "Training curves", "timeline", url_path="training"),
            page("model_card.py", "Model card", "description", url_path="model-card"),
        ],
    })


def main() -> None:
    st.set_page_config(page_title="pneumo · chest X-ray screening aid",
                       page_icon=favicon(), layout="wide")
    st.html(PHONE_CSS)
    current = build_navigation()
    widgets.sidebar()
    current.run()


main()
