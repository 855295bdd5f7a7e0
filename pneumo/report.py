"""A one-page report of one prediction, as PDF (fpdf2) or PNG (Pillow).

Pure functions of arrays and numbers: no file names, no DICOM tags, nothing that could identify
a patient. The date and time of the analysis, the bundle's name and hash are printed when given
(the PDF's creation date is that time, or fixed), so the same inputs give the same bytes.

An image the out-of-population gate flagged (`assessed=False`) gets a report headed
"NOT VALID" that carries the gate's reasons and no result: no probability, no label, no bar,
no heatmap.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .render import to_rgb_uint8
from .verdict import format_probability

DISCLAIMER = (
    "Research software, not a medical device. This is a screening aid for paediatric "
    "(1-5 years) frontal chest X-rays: it does not make a diagnosis. A qualified clinician must "
    "review the image. The heatmap shows which regions drove the model's score, not where "
    "disease is."
)
TITLE = "pneumo - pneumonia screening aid"
MAX_SIDE = 1024  # images are downscaled to this for the report
_FIXED_DATE = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)  # no real date: reproducible bytes
_RED, _GREEN, _GREY = (200, 40, 40), (30, 130, 60), (90, 90, 90)
NOT_VALID = "NOT VALID - outside the model's population: no result is given for this image"


def bundle_hash(directory) -> str:
    """First 12 hex digits of the sha256 of the bundle's manifest.json (which holds the sha256
    of every other file), or "" when it cannot be read."""
    from pathlib import Path

    from .bundle import MANIFEST, sha256_file

    try:
        return sha256_file(Path(directory) / MANIFEST)[:12]
    except OSError:
        return ""


def _pil(image: np.ndarray, max_side: int = MAX_SIDE) -> Image.Image:
    img = Image.fromarray(to_rgb_uint8(image), "RGB")
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return img


def _jpeg(img: Image.Image) -> io.BytesIO:
    """JPEG bytes (embedded as-is by fpdf2): a tenth of the size of the PNG it would make."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    buf.seek(0)
    return buf


def _summary(probability: float, threshold: float, label: str | None) -> tuple[str, str]:
    p, t = float(probability), float(threshold)
    if not (0.0 <= p <= 1.0 and 0.0 <= t <= 1.0):
        raise ValueError(f"probability and threshold must be in [0, 1], got {p}, {t}")
    label = label or ("PNEUMONIA" if p >= t else "NORMAL")
    return label, (f"Probability of pneumonia: {format_probability(p)} (decision threshold "
                   f"{t:.1%}). Result: {label}")


def _lines(model_name: str, method: str | None, flags: Sequence[str],
           analysed_at: dt.datetime | None, model_hash: str | None,
           assessed: bool = True) -> list[str]:
    lines = []
    if not assessed:  # the reasons first: they are the whole content of such a report
        lines += [f"Why: {flag}" for flag in flags]
        flags = ()
    if analysed_at is not None:
        lines.append(f"Analysed: {analysed_at.strftime('%Y-%m-%d %H:%M %Z').strip()}")
    lines.append(f"Model: {model_name}" + (f" (bundle sha256 {model_hash})" if model_hash else ""))
    if method and assessed:
        lines.append(f"Heatmap method: {method}")
    if assessed:
        lines += [f"Flag: {flag}" for flag in flags] or ["Flags: none"]
    return lines


def _header(probability: float, threshold: float, label: str | None,
            assessed: bool) -> tuple[str, str]:
    """(label, header line): the result, or NOT VALID for an image the gate flagged."""
    if not assessed:
        _summary(probability, threshold, label)  # still validates the numbers
        return "NOT VALID", NOT_VALID
    return _summary(probability, threshold, label)


def _latin1(text: str) -> str:
    # fpdf2's core fonts are latin-1; replace typographic characters, drop the rest.
    table = {"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"',
             "\u201d": '"', "\u2265": ">=", "\u2264": "<=", "\u2026": "...", "\u2192": "->"}
    for src, dst in table.items():
        text = text.replace(src, dst)
    return text.encode("latin-1", "replace").decode("latin-1")


def build_report_pdf(image: np.ndarray, overlay: np.ndarray | None, probability: float,
                     threshold: float, model_name: str, label: str | None = None,
                     method: str | None = None, flags: Sequence[str] = (),
                     assessed: bool = True, analysed_at: dt.datetime | None = None,
                     model_hash: str | None = None) -> bytes:
    """A one-page A4 PDF: film and heatmap overlay side by side, probability, threshold, flags.

    Args:
        image: the film, (H, W) float in [0, 1] or uint8.
        overlay: the heatmap overlay, uint8 RGB (H, W, 3), or None (no heatmap).
        probability, threshold: in [0, 1].
        model_name: the bundle's name.
        label: "NORMAL"/"PNEUMONIA"; derived from probability >= threshold when None.
        method: heatmap method shown in the report (e.g. "Grad-CAM").
        flags: plain-language review reasons; for `assessed=False`, the gate's reasons.
        assessed: False when the out-of-population gate fired: the report says NOT VALID and
            carries no probability, label, bar or heatmap.
        analysed_at: when the analysis ran (printed, and the PDF's creation date).
        model_hash: short sha256 of the bundle (`bundle_hash`).
    """
    from fpdf import FPDF

    label, summary = _header(probability, threshold, label, assessed)
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_creation_date(analysed_at or _FIXED_DATE)
    pdf.set_title("pneumo report")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _latin1(TITLE), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 12)
    pdf.set_text_color(*(_GREEN if label == "NORMAL" else _RED))
    pdf.multi_cell(0, 7, _latin1(summary), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    if assessed:
        _pdf_bar(pdf, float(probability), float(threshold))
    panels = [("Image", _pil(image))] + ([("Heatmap overlay", _pil(overlay))]
                                          if overlay is not None and assessed else [])
    width = (pdf.epw - 6) / 2
    top = pdf.get_y() + 2
    height = 0.0
    for k, (caption, img) in enumerate(panels):
        x = pdf.l_margin + k * (width + 6)
        h = width * img.height / img.width
        pdf.image(_jpeg(img), x=x, y=top + 6, w=width, h=h)
        pdf.set_xy(x, top)
        pdf.set_font("Helvetica", "", 10)
        pdf.cell(width, 5, caption)
        height = max(height, h)
    pdf.set_xy(pdf.l_margin, top + 8 + height)
    pdf.set_font("Helvetica", "", 10)
    for line in _lines(model_name, method, flags, analysed_at, model_hash, assessed):
        pdf.multi_cell(0, 5, _latin1(line), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("Helvetica", "I", 9)
    pdf.set_text_color(*_GREY)
    pdf.multi_cell(0, 4.5, _latin1(DISCLAIMER), align="L", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _pdf_bar(pdf, probability: float, threshold: float) -> None:
    x, y, w, h = pdf.l_margin, pdf.get_y() + 2, pdf.epw, 5
    pdf.set_draw_color(120, 120, 120)
    pdf.set_fill_color(235, 235, 235)
    pdf.rect(x, y, w, h, style="DF")
    pdf.set_fill_color(*(_RED if probability >= threshold else _GREEN))
    if probability > 0:
        pdf.rect(x, y, w * probability, h, style="F")
    pdf.set_draw_color(0, 0, 0)
    pdf.set_line_width(0.6)
    pdf.line(x + w * threshold, y - 1.5, x + w * threshold, y + h + 1.5)
    pdf.set_line_width(0.2)
    pdf.set_xy(x, y + h + 1)
    pdf.set_font("Helvetica", "", 8)
    pdf.cell(15, 4, "0%", align="L")
    pdf.cell(w - 30, 4, "bar = probability of pneumonia; black line = decision threshold",
             align="C")
    pdf.cell(15, 4, "100%", align="R", new_x="LMARGIN", new_y="NEXT")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size only
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + ([line] if line else [])


def build_report_png(image: np.ndarray, overlay: np.ndarray | None, probability: float,
                     threshold: float, model_name: str, label: str | None = None,
                     method: str | None = None, flags: Sequence[str] = (),
                     assessed: bool = True, analysed_at: dt.datetime | None = None,
                     model_hash: str | None = None) -> bytes:
    """The same report as `build_report_pdf`, as one PNG image (1400 px wide)."""
    label, summary = _header(probability, threshold, label, assessed)
    width, margin, gap = 1400, 40, 30
    panel = (width - 2 * margin - gap) // 2
    imgs = [("Image", _pil(image, panel))]
    if overlay is not None and assessed:
        imgs.append(("Heatmap overlay", _pil(overlay, panel)))
    img_h = max(img.height for _, img in imgs)
    big, mid, small = _font(34), _font(24), _font(20)
    scratch = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    text_lines = [line for text in _lines(model_name, method, flags, analysed_at, model_hash,
                                          assessed)
                  for line in _wrap(scratch, text, mid, width - 2 * margin)]
    disclaimer = _wrap(scratch, DISCLAIMER, small, width - 2 * margin)
    height = (margin + 186 + 34 + img_h + 20 + 32 * len(text_lines) + 20
              + 26 * len(disclaimer) + margin)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = margin
    draw.text((margin, y), TITLE, fill="black", font=big)
    y += 56
    draw.text((margin, y), summary, font=mid, fill=_GREEN if label == "NORMAL" else _RED)
    y += 44
    if assessed:
        _png_bar(draw, margin, y, width - 2 * margin, float(probability), float(threshold))
        draw.text((margin, y + 36), "bar = probability of pneumonia; black line = decision "
                  "threshold", fill=_GREY, font=small)
    y += 86
    for k, (caption, img) in enumerate(imgs):
        x = margin + k * (panel + gap)
        draw.text((x, y), caption, fill="black", font=mid)
        canvas.paste(img, (x, y + 34))
    y += 34 + img_h + 20
    for line in text_lines:
        draw.text((margin, y), line, fill="black", font=mid)
        y += 32
    y += 20
    for line in disclaimer:
        draw.text((margin, y), line, fill=_GREY, font=small)
        y += 26
    out = io.BytesIO()
    canvas.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _png_bar(draw: ImageDraw.ImageDraw, x: int, y: int, width: int, probability: float,
             threshold: float) -> None:
    draw.rectangle([x, y, x + width, y + 24], fill=(235, 235, 235), outline=_GREY)
    if probability > 0:
        draw.rectangle([x, y, x + int(width * probability), y + 24],
                       fill=_RED if probability >= threshold else _GREEN)
    tx = x + int(width * threshold)
    draw.line([tx, y - 8, tx, y + 32], fill="black", width=4)
