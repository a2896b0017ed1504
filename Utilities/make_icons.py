"""Draw the extension and module icons (128x128 PNG) with Pillow.

Run once after changing a pictogram; the PNGs are committed:
    python Utilities/make_icons.py
Each icon is drawn at 4x size and downsampled so edges are antialiased.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SIZE = 128
SCALE = 4
REPOSITORY = Path(__file__).resolve().parent.parent


def _canvas(background: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGBA", (SIZE * SCALE, SIZE * SCALE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, SIZE * SCALE - 1, SIZE * SCALE - 1), radius=22 * SCALE, fill=background)
    return image, draw


def _label(draw: ImageDraw.ImageDraw, text: str, colour: str = "white") -> None:
    """Short label centred along the bottom edge."""
    font = ImageFont.load_default(size=24 * SCALE)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (SIZE * SCALE - (right - left)) / 2 - left
    draw.text((x, 96 * SCALE - top), text, font=font, fill=colour)


def _s(*values: float) -> list[float]:
    """Coordinates given on the 128-pixel grid, scaled to the drawing canvas."""
    return [v * SCALE for v in values]


def sacroiliitis() -> Image.Image:
    """Pelvis seen on an axial CT: sacrum between two iliac wings, joint gaps highlighted."""
    image, draw = _canvas("#3b2a1a")
    draw.polygon(_s(50, 22, 78, 22, 72, 80, 56, 80), fill="#f0e2c8")               # sacrum
    draw.polygon(_s(14, 16, 44, 24, 50, 74, 24, 70, 10, 40), fill="#f0e2c8")      # right ilium
    draw.polygon(_s(114, 16, 84, 24, 78, 74, 104, 70, 118, 40), fill="#f0e2c8")   # left ilium
    draw.line(_s(47, 23, 53, 77), fill="#ff7a1a", width=5 * SCALE)                # joint spaces
    draw.line(_s(81, 23, 75, 77), fill="#ff7a1a", width=5 * SCALE)
    _label(draw, "SIJ", "#ffb070")
    return image


def spine_ovf() -> Image.Image:
    """Sagittal stack of vertebral bodies, one of them wedge-shaped (fractured)."""
    image, draw = _canvas("#1d2b3a")
    tops = [8, 30, 52, 74]
    for index, top in enumerate(tops):
        if index == 2:
            draw.polygon(_s(40, top + 8, 88, top, 88, top + 18, 40, top + 18), fill="#ff4d4d")
        else:
            draw.rounded_rectangle(_s(40, top, 88, top + 18), radius=3 * SCALE, fill="#e8edf2")
    _label(draw, "OVF", "#ff8a8a")
    return image


def cervical_mr() -> Image.Image:
    """Lordotic cervical column on a dark MR background, discs bright as on T2."""
    image, draw = _canvas("#201a3a")
    centres = [(58, 12), (64, 28), (68, 44), (68, 60), (64, 76)]
    for x, y in centres:
        draw.rounded_rectangle(_s(x - 14, y - 6, x + 14, y + 6), radius=3 * SCALE, fill="#b9a8ff")
    for (x0, y0), (x1, y1) in zip(centres, centres[1:]):
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        draw.ellipse(_s(xm - 12, ym - 2.5, xm + 12, ym + 2.5), fill="#ffffff")
    draw.arc(_s(74, 4, 110, 88), start=-80, end=80, fill="#7fd0ff", width=3 * SCALE)  # spinal cord
    _label(draw, "C-MR", "#d6ccff")
    return image


def wrist_qc() -> Image.Image:
    """Radiograph of a forearm and wrist with a quality-control check mark."""
    image, draw = _canvas("#0f2a22")
    draw.rectangle(_s(14, 6, 70, 88), fill="#26463b")                                # detector
    draw.rounded_rectangle(_s(28, 46, 40, 88), radius=4 * SCALE, fill="#e6f2ec")     # radius
    draw.rounded_rectangle(_s(44, 50, 54, 88), radius=4 * SCALE, fill="#e6f2ec")     # ulna
    draw.ellipse(_s(26, 20, 56, 48), fill="#e6f2ec")                                 # carpus
    draw.text(_s(58, 8), "L", font=ImageFont.load_default(size=14 * SCALE), fill="#ffd54a")
    draw.line(_s(76, 46, 90, 62, 116, 24), fill="#4cd97b", width=8 * SCALE, joint="curve")
    _label(draw, "QC", "#8af0b0")
    return image


def extension() -> Image.Image:
    """The four module colours as tiles with the extension's name."""
    image, draw = _canvas("#20242c")
    for (x, y), colour in zip([(14, 10), (68, 10), (14, 50), (68, 50)],
                              ["#ff7a1a", "#ff4d4d", "#b9a8ff", "#4cd97b"]):
        draw.rounded_rectangle(_s(x, y, x + 46, y + 34), radius=6 * SCALE, fill=colour)
    _label(draw, "MSKAI")
    return image


ICONS = {
    "Resources/Icons/MSKAI.png": extension,
    "SacroiliitisCT/Resources/Icons/SacroiliitisCT.png": sacroiliitis,
    "SpineOVF/Resources/Icons/SpineOVF.png": spine_ovf,
    "CervicalMR/Resources/Icons/CervicalMR.png": cervical_mr,
    "WristQC/Resources/Icons/WristQC.png": wrist_qc,
}


def main() -> None:
    for relative_path, draw_icon in ICONS.items():
        path = REPOSITORY / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_icon().resize((SIZE, SIZE), Image.LANCZOS).save(path, optimize=True)
        print(path)


if __name__ == "__main__":
    main()
