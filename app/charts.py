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


def confusion_heatmap(cm: Sequence[Sequence[int]], films: str = "") -> go.Figure:
    """[[tn, fp], [fn, tp]] as an annotated heatmap (rows: truth, columns: prediction).

    `films` names the films and n (the figure's title).
    """
    z = np.asarray(cm, dtype=float)
    names = [["True negative", "False positive"], ["False negative", "True positive"]]
    text = [[f"{names[i][j]}<br><b>{int(z[i, j])}</b>" for j in range(2)] for i in range(2)]
    fig = go.Figure(go.Heatmap(
        z=z, x=["Predicted NORMAL", "Predicted PNEUMONIA"], y=["Truly NORMAL", "Truly PNEUMONIA"],
        text=text, texttemplate="%{text}", colorscale="Blues", showscale=False,
        hovertemplate="%{y}, %{x}: %{z}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40 if films else 10, b=10),
                      title=dict(text=films, font=dict(size=13)))
    return fig


def roc_figure(roc: pd.DataFrame, threshold: float, sens: float, spec: float,
               auc_text: str, films: str = "") -> go.Figure:
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
    return _roc_axes(fig, films, height=430, legend_x=0.45)


def pr_figure(pr: pd.DataFrame, threshold: float, recall: float, precision: float,
              prevalence: float, ap_text: str, films: str = "") -> go.Figure:
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
                      height=430, legend=dict(x=0.02, y=0.05), margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text=films, font=dict(size=13)))
    fig.update_xaxes(range=[-0.01, 1.01])
    fig.update_yaxes(range=[-0.01, 1.01])
    return fig


METRIC_TITLES = {"loss": "loss (binary cross-entropy)", "accuracy": "accuracy",
                 "auc": "ROC AUC"}


def training_figure(history: pd.DataFrame, metric: str, val_name: str = "validation",
                    best: dict[str, int] | None = None, train_name: str = "train") -> go.Figure:
    """Train vs validation `metric` per epoch, epochs numbered across stages, stages marked.

    `val_name` names the validation split (with its n); `best` maps a stage to the epoch whose
    weights were restored at its end, marked with a star on the validation curve.
    """
    h = history.reset_index(drop=True)
    x = np.arange(1, len(h) + 1)
    fig = go.Figure()
    for col, name, colour in ((metric, train_name, BLUE), (f"val_{metric}", val_name, RED)):
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
        xs = []  # 1-based positions of the restored epochs
        for stage, epoch in (best or {}).items() if "epoch" in h else ():
            rows = h.index[(h["stage"] == stage) & (h["epoch"] == epoch)]
            if len(rows) and f"val_{metric}" in h:
                xs.append(int(rows[0]) + 1)
        if xs:
            fig.add_scatter(x=xs, y=h[f"val_{metric}"].iloc[[m - 1 for m in xs]],
                            mode="markers", name="restored best epoch",
                            marker=dict(symbol="star", size=15, color="gold",
                                        line=dict(color="black", width=1)),
                            hovertemplate="restored at the end of its stage: epoch %{x}"
                                          "<extra></extra>")
    fig.update_layout(title=METRIC_TITLES.get(metric, metric), xaxis_title="epoch (all stages)",
                      yaxis_title=METRIC_TITLES.get(metric, metric), height=360,
                      margin=dict(l=10, r=10, t=60, b=10),
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.2, yanchor="bottom"))
    fig.update_xaxes(tickformat="d", dtick=max(1, len(h) // 10))
    return fig


FAINT_BELOW = 10  # calibration bins with fewer films than this are drawn faint


def reliability_figure(curve: pd.DataFrame, y: np.ndarray, p: np.ndarray,
                       films: str = "") -> go.Figure:
    """Reliability diagram (top) and the histogram of predicted probabilities (bottom).

    `curve` has `low`/`high` (95% CI of the observed fraction) per bin; bins with fewer than
    FAINT_BELOW films are drawn faint, their n in the hover and beside the point.
    """
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28],
                        vertical_spacing=0.06)
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color=GREY),
                    name="perfect calibration", hoverinfo="skip", row=1, col=1)
    fig.add_scatter(x=curve["mean_predicted"], y=curve["fraction_positive"], mode="lines",
                    line=dict(color=BLUE, width=1), showlegend=False, hoverinfo="skip",
                    row=1, col=1)
    few = curve["count"] < FAINT_BELOW
    for mask, name, opacity in ((~few, "model (95% CI)", 1.0),
                                (few, f"bins under {FAINT_BELOW} films", 0.3)):
        part = curve[mask]
        if part.empty:
            continue
        fig.add_scatter(
            x=part["mean_predicted"], y=part["fraction_positive"], mode="markers+text",
            name=name, marker=dict(size=9, color=BLUE, opacity=opacity),
            text=[f"n={c}" for c in part["count"]], textposition="middle right",
            textfont=dict(size=10, color=f"rgba(31,119,180,{opacity})"),
            error_y=dict(type="data", symmetric=False, color=f"rgba(31,119,180,{opacity})",
                         array=part["high"] - part["fraction_positive"],
                         arrayminus=part["fraction_positive"] - part["low"]),
            customdata=np.column_stack([part["bin_lower"], part["bin_upper"], part["count"],
                                        part["low"], part["high"]]),
            hovertemplate="bin %{customdata[0]:.2f}–%{customdata[1]:.2f} "
                          "(%{customdata[2]} films)<br>mean predicted %{x:.3f}<br>"
                          "observed pneumonia %{y:.3f} (95% CI %{customdata[3]:.2f}–"
                          "%{customdata[4]:.2f})<extra></extra>", row=1, col=1)
    for label, name, colour in ((0, "NORMAL", GREEN), (1, "PNEUMONIA", RED)):
        fig.add_histogram(x=p[y == label], name=f"{name} films", marker_color=colour,
                          opacity=0.6, xbins=dict(start=0, end=1, size=0.05), row=2, col=1)
    fig.update_layout(barmode="overlay", height=580, margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text=films, font=dict(size=13)))
    fig.update_xaxes(range=[-0.02, 1.08], row=1, col=1)
    fig.update_xaxes(range=[-0.02, 1.08], title_text="predicted probability of pneumonia",
                     row=2, col=1)
    fig.update_yaxes(range=[-0.02, 1.02], title_text="observed fraction with pneumonia",
                     row=1, col=1)
    fig.update_yaxes(title_text="films", row=2, col=1)
    return fig


def roc_overlay(curves: list[tuple[str, pd.DataFrame]], films: str = "") -> go.Figure:
    """Several ROC curves (name, roc_points table) on one chart, for comparing models."""
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color=GREY),
                    name="chance", hoverinfo="skip")
    for (name, roc), colour in zip(curves, (BLUE, RED, GREEN, GREY)):
        fig.add_scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", name=name,
                        line=dict(color=colour), customdata=roc["threshold"],
                        hovertemplate=f"{name}<br>threshold %{{customdata:.4f}}<br>"
                                      "sensitivity %{y:.3f}<br>1 − specificity %{x:.3f}"
                                      "<extra></extra>")
    return _roc_axes(fig, films, height=560, legend_x=None)


def _roc_axes(fig: go.Figure, films: str, height: int, legend_x: float | None) -> go.Figure:
    """The ROC plane: square axes from 0 to 1, titled with the films shown.

    `constrain="domain"`: to keep the plane square plotly otherwise widens the x range (to
    about -0.5..1.5 in a wide column) instead of narrowing the plot. `legend_x=None` puts the
    legend under the plot, off the curves (several long model names do not fit inside).
    """
    legend = (dict(x=legend_x, y=0.05) if legend_x is not None else
              dict(orientation="h", x=0, xanchor="left", y=-0.15, yanchor="top"))
    fig.update_layout(xaxis_title="1 − specificity (false-positive rate)",
                      yaxis_title="sensitivity (true-positive rate)", height=height,
                      title=dict(text=films, font=dict(size=13)), legend=legend,
                      margin=dict(l=10, r=10, t=40, b=10))
    fig.update_xaxes(range=[0, 1], constrain="domain")
    fig.update_yaxes(range=[0, 1], constrain="domain", scaleanchor="x", scaleratio=1)
    return fig
