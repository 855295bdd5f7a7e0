"""A one-page report of one prediction, as PDF (fpdf2) or PNG (Pillow).

Pure functions of arrays and numbers: no file names, no DICOM tags, nothing that could identify
a patient. The date and time of the analysis, the bundle's name and hash are printed when given
(the PDF's creation date is that time, or fixed), so the same inputs give the same bytes.

An image the out-of-population gate flagged (`assessed=False`) gets a report headed
"NOT VALID" that carries the gate's reasons and no result: no probability, no label, no bar,
no heatmap.

The clinician's part of the page (accession number, reviewer, date, notes) is blank lines to
fill in by hand: a report is printed from a dashboard that never reads an identifier, so it
never pre-fills one.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .heatcheck import colour_scale
from .render import fit_within, to_rgb_uint8
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
BAR_LEGEND = "Bar: probability of pneumonia. Black line: decision threshold."
# Under the heatmap's colour key (ASCII arrows: the PNG's default font has no arrow glyphs).
KEY_WORDS = ("low", "<- influence on the score ->", "high")
# Blank lines the reviewing clinician fills in by hand: the report never holds an identifier,
# so these are labels only, never pre-filled.
FORM_TITLE = "For the reviewing clinician (fill in by hand)"
FORM_FIELDS = ("Accession number", "Reviewed by", "Date reviewed")
NOTES_LABEL = "Clinician's notes"
PDF_MAX_PANEL_MM = 100.0  # a tall (portrait) film is scaled to this height: one page always
PNG_WIDTH, PNG_MIN_HEIGHT = 1400, 1980  # the PNG is at least an A4 page's proportion


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
    return Image.fromarray(fit_within(to_rgb_uint8(image), max_side), "RGB")


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
             "\u201d": '"', "\u2265": ">=", "\u2264": "<=", "\u2026": "...", "\u2192": "->",
             "\u2190": "<-"}
    for src, dst in table.items():
        text = text.replace(src, dst)
    return text.encode("latin-1", "replace").decode("latin-1")


def build_report_pdf(image: np.ndarray, overlay: np.ndarray | None, probability: float,
                     threshold: float, model_name: str, label: str | None = None,
                     method: str | None = None, flags: Sequence[str] = (),
                     assessed: bool = True, analysed_at: dt.datetime | None = None,
                     model_hash: str | None = None) -> bytes:
    """A one-page A4 PDF: the result and its bar, film and heatmap overlay side by side (with
    the heatmap's colour key), the facts, blank lines for the reviewing clinician and the
    disclaimer at the foot of the page.

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
    pdf.set_margins(12, 12, 12)
    pdf.set_auto_page_break(auto=True, margin=12)  # only a very long list of flags spills
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _latin1(TITLE), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 12)
    pdf.set_text_color(*(_GREEN if label == "NORMAL" else _RED))
    pdf.multi_cell(0, 7, _latin1(summary), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    if assessed:
        _pdf_bar(pdf, float(probability), float(threshold))
    with_heatmap = overlay is not None and assessed
    _pdf_panels(pdf, _pil(image), _pil(overlay) if with_heatmap else None)
    pdf.set_font("Helvetica", "", 10)
    for line in _lines(model_name, method, flags, analysed_at, model_hash, assessed):
        pdf.multi_cell(0, 5, _latin1(line), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "I", 9)
    disclaimer = pdf.multi_cell(0, 4.5, _latin1(DISCLAIMER), dry_run=True, output="LINES")
    foot = pdf.h - pdf.b_margin - 4.5 * len(disclaimer)  # the disclaimer ends the page
    _pdf_form(pdf, foot - 3)
    pdf.set_xy(pdf.l_margin, max(foot, pdf.get_y() + 3))
    pdf.set_font("Helvetica", "I", 9)
    pdf.set_text_color(*_GREY)
    pdf.multi_cell(0, 4.5, _latin1(DISCLAIMER), align="L", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _pdf_bar(pdf, probability: float, threshold: float) -> None:
    """The legend above the bar, 0% and 100% below it: the threshold line, which stands out
    of the bar, crosses neither (1.8 mm clear of both)."""
    x, w = pdf.l_margin, pdf.epw
    pdf.set_y(pdf.get_y() + 1)
    pdf.set_font("Helvetica", "", 8)
    pdf.cell(w, 4, _latin1(BAR_LEGEND), align="L", new_x="LMARGIN", new_y="NEXT")
    y, h = pdf.get_y() + 2.5, 6
    pdf.set_draw_color(120, 120, 120)
    pdf.set_fill_color(235, 235, 235)
    pdf.rect(x, y, w, h, style="DF")
    pdf.set_fill_color(*(_RED if probability >= threshold else _GREEN))
    if probability > 0:
        pdf.rect(x, y, w * probability, h, style="F")
    pdf.set_draw_color(0, 0, 0)
    pdf.set_line_width(0.6)
    pdf.line(x + w * threshold, y - 1.2, x + w * threshold, y + h + 1.2)
    pdf.set_line_width(0.2)
    pdf.set_xy(x, y + h + 2.2)
    pdf.cell(w / 2, 4, "0%", align="L")
    pdf.cell(w / 2, 4, "100%", align="R", new_x="LMARGIN", new_y="NEXT")


def _fit(img: Image.Image, width: float, max_height: float) -> tuple[float, float]:
    """(w, h) of `img` scaled to `width`, or smaller to stay within `max_height`."""
    h = width * img.height / img.width
    return (width, h) if h <= max_height else (max_height * img.width / img.height, max_height)


def _pdf_panels(pdf, film: Image.Image, heat: Image.Image | None) -> None:
    """Film and overlay side by side, the colour key under the overlay."""
    gap = 6
    width = (pdf.epw - gap) / 2
    top = pdf.get_y() + 3
    bottom = top
    pdf.set_font("Helvetica", "", 10)
    for k, (caption, img) in enumerate([("Image", film)]
                                       + ([("Heatmap overlay", heat)] if heat else [])):
        x = pdf.l_margin + k * (width + gap)
        w, h = _fit(img, width, PDF_MAX_PANEL_MM)
        pdf.set_xy(x, top)
        pdf.cell(width, 5, caption)
        pdf.image(_jpeg(img), x=x, y=top + 6, w=w, h=h)
        bottom = max(bottom, top + 6 + h)
        if k == 1:
            key_top = top + 6 + h + 2
            pdf.image(Image.fromarray(colour_scale(512, 14), "RGB"), x=x, y=key_top, w=w, h=3.5)
            _pdf_key_words(pdf, x, key_top + 4, w)
            bottom = max(bottom, key_top + 8)
    pdf.set_xy(pdf.l_margin, bottom + 3)


def _pdf_key_words(pdf, x: float, y: float, width: float) -> None:
    low, middle, high = KEY_WORDS
    pdf.set_font("Helvetica", "", 8)
    pdf.set_xy(x, y)
    pdf.cell(width / 4, 4, low, align="L")
    pdf.cell(width / 2, 4, middle, align="C")
    pdf.cell(width / 4, 4, high, align="R")
    pdf.set_font("Helvetica", "", 10)


def _pdf_form(pdf, bottom: float) -> None:
    """Labelled blank lines for the clinician, then ruled lines for notes down to `bottom`."""
    pdf.set_y(pdf.get_y() + 4)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(0, 6, _latin1(FORM_TITLE), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    pdf.set_draw_color(*_GREY)
    right = pdf.l_margin + pdf.epw
    for field in (*FORM_FIELDS, NOTES_LABEL):
        y = pdf.get_y() + 3
        pdf.set_xy(pdf.l_margin, y)
        text = f"{field}:"
        pdf.cell(pdf.get_string_width(text) + 2, 6, _latin1(text))
        pdf.line(pdf.get_x(), y + 5, right, y + 5)  # the blank to write on
        pdf.set_xy(pdf.l_margin, y + 6)
    y = pdf.get_y() + 8
    while y <= bottom:  # the rest of the page: lines for the notes
        pdf.line(pdf.l_margin, y, right, y)
        y += 8
    pdf.set_draw_color(0, 0, 0)
    pdf.set_y(min(y, bottom))


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


_PNG_MARGIN, _PNG_GAP, _PNG_ROW = 40, 30, 32  # px: page margin, between panels, text line
_PNG_FORM = 56  # px per blank field, and per ruled line for notes


def build_report_png(image: np.ndarray, overlay: np.ndarray | None, probability: float,
                     threshold: float, model_name: str, label: str | None = None,
                     method: str | None = None, flags: Sequence[str] = (),
                     assessed: bool = True, analysed_at: dt.datetime | None = None,
                     model_hash: str | None = None) -> bytes:
    """The same report as `build_report_pdf`, as one PNG page (1400 px wide, at least A4's
    proportion: the notes' ruled lines fill what the content leaves)."""
    label, summary = _header(probability, threshold, label, assessed)
    width, margin, gap = PNG_WIDTH, _PNG_MARGIN, _PNG_GAP
    inner = width - 2 * margin
    panel = (inner - gap) // 2
    imgs = [("Image", _pil(image, panel))]
    if overlay is not None and assessed:
        imgs.append(("Heatmap overlay", _pil(overlay, panel)))
    img_h = max(img.height for _, img in imgs) + (60 if len(imgs) == 2 else 0)  # + the key
    big, mid, small = _font(34), _font(24), _font(20)
    scratch = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    text_lines = [line for text in _lines(model_name, method, flags, analysed_at, model_hash,
                                          assessed)
                  for line in _wrap(scratch, text, mid, inner)]
    disclaimer = _wrap(scratch, DISCLAIMER, small, inner)
    head = 56 + 44 * len(_wrap(scratch, summary, mid, inner)) + (110 if assessed else 0)
    form = 70 + _PNG_FORM * (len(FORM_FIELDS) + 1) + 2 * _PNG_FORM  # at least 2 note lines
    content = (margin + head + 34 + img_h + 20 + _PNG_ROW * len(text_lines) + form + 20
               + 26 * len(disclaimer) + margin)
    canvas = Image.new("RGB", (width, max(PNG_MIN_HEIGHT, content)), "white")
    draw = ImageDraw.Draw(canvas)
    y = margin
    draw.text((margin, y), TITLE, fill="black", font=big)
    y += 56
    for line in _wrap(scratch, summary, mid, inner):
        draw.text((margin, y), line, font=mid, fill=_GREEN if label == "NORMAL" else _RED)
        y += 44
    if assessed:
        y = _png_bar(draw, margin, y, inner, float(probability), float(threshold), small)
    for k, (caption, img) in enumerate(imgs):
        x = margin + k * (panel + gap)
        draw.text((x, y), caption, fill="black", font=mid)
        canvas.paste(img, (x, y + 34))
        if k == 1:
            _png_key(canvas, draw, x, y + 34 + img.height + 8, img.width, small)
    y += 34 + img_h + 20
    for line in text_lines:
        draw.text((margin, y), line, fill="black", font=mid)
        y += _PNG_ROW
    foot = canvas.height - margin - 26 * len(disclaimer)
    _png_form(draw, margin, y + 30, inner, foot - 20, mid)
    y = foot
    for line in disclaimer:
        draw.text((margin, y), line, fill=_GREY, font=small)
        y += 26
    out = io.BytesIO()
    canvas.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _png_bar(draw: ImageDraw.ImageDraw, x: int, y: int, width: int, probability: float,
             threshold: float, font) -> int:
    """Legend above, 0% and 100% below the bar: the threshold line, standing 8 px out of the
    bar, stays clear of both. Returns the y below the block."""
    draw.text((x, y), BAR_LEGEND, fill=_GREY, font=font)
    top = y + 42
    draw.rectangle([x, top, x + width, top + 24], fill=(235, 235, 235), outline=_GREY)
    if probability > 0:
        draw.rectangle([x, top, x + int(width * probability), top + 24],
                       fill=_RED if probability >= threshold else _GREEN)
    tx = x + int(width * threshold)
    draw.line([tx, top - 8, tx, top + 32], fill="black", width=4)
    draw.text((x, top + 40), "0%", fill=_GREY, font=font)
    draw.text((x + width, top + 40), "100%", fill=_GREY, font=font, anchor="ra")
    return top + 76


def _png_key(canvas: Image.Image, draw: ImageDraw.ImageDraw, x: int, y: int, width: int,
             font) -> None:
    """The overlay's colour bar (`colour_scale`) with its words, under the overlay."""
    canvas.paste(Image.fromarray(colour_scale(width, 18), "RGB"), (x, y))
    low, middle, high = KEY_WORDS
    draw.text((x, y + 24), low, fill=_GREY, font=font)
    draw.text((x + width // 2, y + 24), middle, fill=_GREY, font=font, anchor="ma")
    draw.text((x + width, y + 24), high, fill=_GREY, font=font, anchor="ra")


def _png_form(draw: ImageDraw.ImageDraw, x: int, y: int, width: int, bottom: int,
              font) -> None:
    """Labelled blank lines for the clinician, then ruled lines for notes down to `bottom`."""
    draw.text((x, y), FORM_TITLE, fill="black", font=font)
    y += 50
    for field in (*FORM_FIELDS, NOTES_LABEL):
        text = f"{field}:"
        draw.text((x, y), text, fill="black", font=font)
        start = x + int(draw.textlength(text, font=font)) + 12
        draw.line([start, y + 28, x + width, y + 28], fill=_GREY, width=2)
        y += _PNG_FORM
    while y + 28 <= bottom:
        draw.line([x, y + 28, x + width, y + 28], fill=_GREY, width=2)
        y += _PNG_FORM
