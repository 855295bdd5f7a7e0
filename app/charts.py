"""Plotly figures for the pages (pure: data in, figure out; no Streamlit calls)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

RED, GREEN, BLUE, GREY = "#c82828", "#1e823c", "#1f77b4", "#888888"


def probability_gauge(probability: float, threshold: float, valid: bool = True) -> go.Figure:
    """A 0-100 % gauge with the threshold marked as a black line.

    No number on the dial (the metric beside it shows the probability, as ">99.9%" rather
    than "100.0%"), and a short title with wide margins so it is not clipped on a phone.
    `valid=False` greys it out for an image the model cannot judge.
    """
    colour = (RED if probability >= threshold else GREEN) if valid else GREY
    title = (f"threshold {threshold:.1%}" if valid
             else "score of an image the model cannot judge: NOT VALID")
    fig = go.Figure(go.Indicator(
        mode="gauge", value=100 * probability,
        gauge={"axis": {"range": [0, 100], "ticksuffix": "%", "nticks": 6},
               "bar": {"color": colour},
               "threshold": {"line": {"color": "black", "width": 4}, "thickness": 0.9,
                             "value": 100 * threshold}},
        title={"text": title, "font": {"size": 14}}))
    fig.update_layout(height=200, margin=dict(l=40, r=40, t=40, b=10), autosize=True)
    return fig


def confusion_heatmap(cm: Sequence[Sequence[int]]) -> go.Figure:
    """[[tn, fp], [fn, tp]] as an annotated heatmap (rows: truth, columns: prediction)."""
    z = np.asarray(cm, dtype=float)
    names = [["True negative", "False positive"], ["False negative", "True positive"]]
    text = [[f"{names[i][j]}<br><b>{int(z[i, j])}</b>" for j in range(2)] for i in range(2)]
    fig = go.Figure(go.Heatmap(
        z=z, x=["Predicted NORMAL", "Predicted PNEUMONIA"], y=["Truly NORMAL", "Truly PNEUMONIA"],
        text=text, texttemplate="%{text}", colorscale="Blues", showscale=False,
        hovertemplate="%{y}, %{x}: %{z}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=10, b=10))
    return fig


def roc_figure(roc: pd.DataFrame, threshold: float, sens: float, spec: float,
               auc_text: str) -> go.Figure:
    custom = np.column_stack([roc["threshold"], roc["tpr"], 1 - roc["fpr"]])
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color=GREY),
                    name="chance", hoverinfo="skip")
    fig.add_scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", name=f"ROC ({auc_text})",
                    line=dict(color=BLUE), customdata=custom,
                    hovertemplate="threshold %{customdata[0]:.4f}<br>sensitivity "
                                  "%{customdata[1]:.3f}<br>specificity %{customdata[2]:.3f}"
                                  "<extra></extra>")
    fig.add_scatter(x=[1 - spec], y=[sens], mode="markers", name=f"threshold {threshold:.3f}",
                    marker=dict(size=13, color=RED, symbol="x"),
                    hovertemplate=f"threshold {threshold:.4f}<br>sensitivity {sens:.3f}<br>"
                                  f"specificity {spec:.3f}<extra></extra>")
    fig.update_layout(xaxis_title="1 − specificity (false-positive rate)",
                      yaxis_title="sensitivity (true-positive rate)", height=430,
                      legend=dict(x=0.45, y=0.05), margin=dict(l=10, r=10, t=30, b=10))
    fig.update_xaxes(range=[-0.01, 1.01])
    fig.update_yaxes(range=[-0.01, 1.01], scaleanchor="x", scaleratio=1)
    return fig


def pr_figure(pr: pd.DataFrame, threshold: float, recall: float, precision: float,
              prevalence: float, ap_text: str) -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[prevalence, prevalence], mode="lines", hoverinfo="skip",
                    line=dict(dash="dash", color=GREY), name=f"chance ({prevalence:.2f})")
    fig.add_scatter(x=pr["recall"], y=pr["precision"], mode="lines", name=f"PR ({ap_text})",
                    line=dict(color=BLUE, shape="hv"),
                    customdata=np.column_stack([pr["threshold"], pr["recall"], pr["precision"]]),
                    hovertemplate="threshold %{customdata[0]:.4f}<br>sensitivity (recall) "
                                  "%{customdata[1]:.3f}<br>precision %{customdata[2]:.3f}"
                                  "<extra></extra>")
    fig.add_scatter(x=[recall], y=[precision], mode="markers", name=f"threshold {threshold:.3f}",
                    marker=dict(size=13, color=RED, symbol="x"))
    fig.update_layout(xaxis_title="sensitivity (recall)", yaxis_title="precision (PPV)",
                      height=430, legend=dict(x=0.02, y=0.05), margin=dict(l=10, r=10, t=30, b=10))
    fig.update_xaxes(range=[-0.01, 1.01])
    fig.update_yaxes(range=[-0.01, 1.01])
    return fig


def training_figure(history: pd.DataFrame, metric: str) -> go.Figure:
    """Train vs validation `metric` per epoch, epochs numbered across stages, stages marked."""
    h = history.reset_index(drop=True)
    x = np.arange(1, len(h) + 1)
    fig = go.Figure()
    for col, name, colour in ((metric, "train", BLUE), (f"val_{metric}", "validation", RED)):
        if col in h:
            fig.add_scatter(x=x, y=h[col], mode="lines+markers", name=name,
                            line=dict(color=colour), customdata=h.get("stage"),
                            hovertemplate=f"epoch %{{x}} (%{{customdata}})<br>{name} {metric} "
                                          "%{y:.4f}<extra></extra>")
    if "stage" in h:
        starts = h.index[h["stage"] != h["stage"].shift()].tolist()
        for i in starts:
            if i > 0:
                fig.add_vline(x=i + 0.5, line=dict(dash="dot", color=GREY))
            fig.add_annotation(x=i + 1, y=1.0, yref="paper", text=str(h["stage"][i]),
                               showarrow=False, xanchor="left", yanchor="bottom")
    fig.update_layout(title=metric, xaxis_title="epoch (all stages)", height=340,
                      margin=dict(l=10, r=10, t=60, b=10),
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.2, yanchor="bottom"))
    fig.update_xaxes(tickformat="d", dtick=max(1, len(h) // 10))
    return fig


def reliability_figure(curve: pd.DataFrame, y: np.ndarray, p: np.ndarray) -> go.Figure:
    """Reliability diagram (top) and the histogram of predicted probabilities (bottom)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28],
                        vertical_spacing=0.06)
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color=GREY),
                    name="perfect calibration", hoverinfo="skip", row=1, col=1)
    fig.add_scatter(x=curve["mean_predicted"], y=curve["fraction_positive"],
                    mode="lines+markers", name="model", line=dict(color=BLUE),
                    marker=dict(size=6 + 14 * np.sqrt(curve["count"] / curve["count"].max())),
                    customdata=np.column_stack([curve["bin_lower"], curve["bin_upper"],
                                                curve["count"]]),
                    hovertemplate="bin %{customdata[0]:.2f}–%{customdata[1]:.2f} "
                                  "(%{customdata[2]} images)<br>mean predicted %{x:.3f}<br>"
                                  "observed pneumonia %{y:.3f}<extra></extra>", row=1, col=1)
    for label, name, colour in ((0, "NORMAL", GREEN), (1, "PNEUMONIA", RED)):
        fig.add_histogram(x=p[y == label], name=name, marker_color=colour, opacity=0.6,
                          xbins=dict(start=0, end=1, size=0.05), row=2, col=1)
    fig.update_layout(barmode="overlay", height=560, margin=dict(l=10, r=10, t=20, b=10))
    fig.update_xaxes(range=[-0.02, 1.02], row=1, col=1)
    fig.update_xaxes(range=[-0.02, 1.02], title_text="predicted probability of pneumonia",
                     row=2, col=1)
    fig.update_yaxes(range=[-0.02, 1.02], title_text="observed fraction with pneumonia",
                     row=1, col=1)
    fig.update_yaxes(title_text="images", row=2, col=1)
    return fig
