"""Digits drawn with PIL strokes, as a person would draw them: black on white, 200×200."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

# Stroke paths in a 0–100 box; each digit is one or more polylines or an ellipse.
STROKES: dict[str, list[list[tuple[int, int]]]] = {
    "1": [[(45, 25), (55, 15), (55, 85)]],
    "4": [[(60, 15), (25, 60), (75, 60)], [(60, 15), (60, 88)]],
    "7": [[(28, 18), (75, 18), (42, 88)]],
    "2": [[(28, 35), (35, 20), (55, 15), (70, 25), (70, 42), (30, 85), (75, 85)]],
}


def draw_digit(
    digit: str, path: Path, size: int = 200, ink: int = 0, paper: int = 255, width: int = 14
) -> Path:
    """Write ``digit`` drawn with a thick pen to ``path`` (PNG); "0" is an ellipse."""
    img = Image.new("L", (size, size), paper)
    d = ImageDraw.Draw(img)
    s = size / 100
    if digit == "0":
        d.ellipse([30 * s, 15 * s, 70 * s, 85 * s], outline=ink, width=width)
    else:
        for line in STROKES[digit]:
            d.line([(x * s, y * s) for x, y in line], fill=ink, width=width, joint="curve")
    img.save(path)
    return path
