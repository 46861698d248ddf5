"""A room's question drawn for the speaker's screen: the room's guesses beside the model's probabilities."""

from __future__ import annotations

import plotly.graph_objects as go

from .base import figure, legend_above

ROOM_COLOUR, MODEL_COLOUR = "#e8710a", "#1a73e8"
ROWS = 12


def guesses_figure(question, font_scale: float = 1.0) -> go.Figure:
    """Horizontal bars, one row per first token: the room's share of guesses and the model's probability of that
    token (each guess is scored by its first token as written after the prompt). Before the reveal, the rows are
    the room's guesses, most guessed first; at the reveal, the model's top 10, then the room's other guesses.
    `question` is a `room.Question` (read through `tallies` and `results` only). Visitor text is escaped for
    Plotly, which would read `<b>` as a tag."""
    from ..room import plotly_text

    tallies = question.tallies()
    revealed = question.state == "revealed"
    n = len(question.guesses)
    rows = []  # (label, room share, model p, hover)
    if revealed:
        results = question.results()
        named = {r["token"]: r for r in tallies}
        for row in results["top"]:
            guessed = named.pop(row["token"], None)
            differs = guessed and guessed["text"] != row["token_text"].lstrip("·")
            label = row["token_text"] + (f"  ({guessed['text']})" if differs else "")
            rows.append((label, row["room"], row["p"], row["token_text"]))
        for r in sorted(named.values(), key=lambda r: -r["count"])[: max(0, ROWS - len(rows))]:
            rows.append((r["text"], r["share"], r["p"], r["token_text"]))
    else:
        for r in tallies[:ROWS]:
            rows.append((r["text"], r["share"], r["p"], r["token_text"]))
    labels = [plotly_text(label) for label, *_ in rows]
    # Plotly draws the first category at the bottom: reverse, so the most guessed (or likeliest) is on top
    labels, room, model, hovers = (list(reversed(x)) for x in (labels, [r[1] for r in rows], [r[2] for r in rows],
                                                                  [plotly_text(r[3]) for r in rows]))
    size = int(14 * font_scale)
    data = [
        dict(type="bar", orientation="h", y=labels, x=room, name=f"room: share of {n} guess{'' if n == 1 else 'es'}",
             marker=dict(color=ROOM_COLOUR), text=[f"{v:.0%}" if v else "" for v in room], textposition="outside",
             constraintext="none", cliponaxis=False,
             textfont=dict(size=size), customdata=hovers,
             hovertemplate="room: %{x:.1%} of guesses<br>first token '%{customdata}'<extra></extra>"),
        dict(type="bar", orientation="h", y=labels, x=model, name="model: probability of the first token",
             marker=dict(color=MODEL_COLOUR), text=[f"{v:.0%}" if v >= 0.005 else f"{v:.1e}" for v in model],
             textposition="outside", constraintext="none", cliponaxis=False, textfont=dict(size=size),
             customdata=hovers, hovertemplate="model: p = %{x:.4f}<br>first token '%{customdata}'<extra></extra>"),
    ]
    context = plotly_text(question.context[-int(40 / font_scale):].replace("\n", "↵"))
    title = (f"Q{question.number} · after “…{context}”: "
             + ("the model's top 10, the room" if revealed else f"{n} guess{'' if n == 1 else 'es'} so far"))
    layout = dict(barmode="group", bargap=0.25, legend=legend_above(1.02),
                  xaxis=dict(title="share of guesses / probability", range=[0, 1.15], tickformat=".0%"),
                  yaxis=dict(automargin=True, type="category"))
    return figure(data, layout, title, 120 + 34 * max(3, len(rows)), font_scale, background="white", top=70)
