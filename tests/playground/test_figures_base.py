"""figures.base: what every figure shares (presenter scaling, the mask colour, probability shading)."""

from __future__ import annotations

import numpy as np
import pytest

from playground.figures.base import (
    MASKED_COLOR, PRESENTER_MASKED, PRESENTER_MAX_HEIGHT, cell_font, figure, masked_upper, probability_colour,
)


def test_presenter_mode_scales_text_caps_height_and_darkens_the_mask():
    plain = figure([], {}, "t", height=500)
    large = figure([], {}, "t", height=500, font_scale=1.5)
    assert plain.layout.height == 500 and plain.layout.plot_bgcolor == MASKED_COLOR
    assert large.layout.height == min(750, PRESENTER_MAX_HEIGHT) and large.layout.plot_bgcolor == PRESENTER_MASKED
    assert large.layout.font.size == int(plain.layout.font.size * 1.5) and large.layout.font.color == "#000"
    assert large.layout.title.font.size == int(16 * 1.5) and large.layout.hoverlabel.font.size == int(13 * 1.5)
    assert figure([], {}, "t", 500, background="white", font_scale=1.5).layout.plot_bgcolor == "white"


def test_cell_text_is_at_least_18_px_on_a_projector():
    assert cell_font(1.0) == 10 and cell_font(1.5) == 18 and cell_font(2.5) == 25


def test_the_future_is_masked():
    m = masked_upper(np.arange(12.0).reshape(3, 4))
    assert np.isnan(m[0, 1:]).all() and np.isnan(m[1, 2:]).all() and np.isnan(m[2, 3])
    assert m[2, 2] == 10 and m[1, 0] == 4


@pytest.mark.parametrize("low,high", [(0.0, 0.5), (0.2, 0.9), (0.5, 1.0)])
def test_a_likelier_token_is_shaded_darker(low, high):
    def lightness(colour: str) -> float:
        r, g, b = (int(x) for x in colour[colour.index("(") + 1 : -1].split(","))
        return r + g + b
    assert lightness(probability_colour(high)) < lightness(probability_colour(low))
    assert probability_colour(2.0) == probability_colour(1.0) and probability_colour(-1) == probability_colour(0)
