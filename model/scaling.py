"""Scaling laws, with the papers' constants: Kaplan et al. 2020 and Chinchilla (Hoffmann et al. 2022).

Losses are in nats per token on each paper's own data and tokenizer (WebText2 with GPT-2's BPE; MassiveText with
SentencePiece), so they compare with another model's loss only roughly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KAPLAN = {  # Kaplan et al. 2020, "Scaling Laws for Neural Language Models", eq. (1.1) and (1.2)
    "alpha_N": 0.076, "N_c": 8.8e13,  # L(N) = (N_c / N)^alpha_N, N = non-embedding parameters, data not limiting
    "alpha_D": 0.095, "D_c": 5.4e13,  # L(D) = (D_c / D)^alpha_D, D = tokens, model large, early-stopped
}
CHINCHILLA = {  # Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", eq. (10) (approach 3)
    "E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28,
}
CHINCHILLA_EXPONENTS = {"a": 0.46, "b": 0.54}  # the paper's Table 2 (approach 3): N_opt ∝ C^a, D_opt ∝ C^b
FLOPS_PER_PARAMETER_TOKEN = 6  # C ≈ 6 N D: training FLOPs (forward 2, backward 4 per parameter per token)

CITATIONS = {
    "kaplan": "Kaplan et al. 2020, *Scaling Laws for Neural Language Models*, arXiv:2001.08361, eq. (1.1)–(1.2)",
    "chinchilla": "Hoffmann et al. 2022, *Training Compute-Optimal Large Language Models*, arXiv:2203.15556, "
                  "eq. (10) and Table 2",
}


@dataclass(frozen=True)
class Trained:
    """A model's published training run."""

    tokens: float
    source: str


TRAINING = {  # by ModelConfig.name
    "smollm2-135m-instruct": Trained(2e12, "SmolLM2 model card (HuggingFaceTB/SmolLM2-135M-Instruct): \"Tokens: 2T\"; "
                                           "Allal et al. 2025, *SmolLM2: When Smol Goes Big*, arXiv:2502.02737"),
    "gemma3-270m": Trained(6e12, "Gemma 3 model card (google/gemma-3-270m): \"the 270M model was trained with 6 "
                                 "trillion tokens\""),
}


def kaplan_loss_n(N):
    """Kaplan's L(N) for N non-embedding parameters."""
    return (KAPLAN["N_c"] / np.asarray(N, float)) ** KAPLAN["alpha_N"]


def kaplan_loss_d(D):
    """Kaplan's L(D) for D tokens."""
    return (KAPLAN["D_c"] / np.asarray(D, float)) ** KAPLAN["alpha_D"]


def chinchilla_loss(N, D):
    """Chinchilla's parametric fit L(N, D) = E + A / N^alpha + B / D^beta."""
    c = CHINCHILLA
    return c["E"] + c["A"] / np.asarray(N, float) ** c["alpha"] + c["B"] / np.asarray(D, float) ** c["beta"]


def compute_optimal(C: float) -> tuple[float, float]:
    """(N_opt, D_opt) minimising the fit's L under C = 6 N D, in closed form (the paper's eq. (4)):
    N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b, with G = (alpha A / (beta B))^(1 / (alpha + beta)),
    a = beta / (alpha + beta), b = alpha / (alpha + beta)."""
    c = CHINCHILLA
    G = (c["alpha"] * c["A"] / (c["beta"] * c["B"])) ** (1 / (c["alpha"] + c["beta"]))
    a, b = c["beta"] / (c["alpha"] + c["beta"]), c["alpha"] / (c["alpha"] + c["beta"])
    per = C / FLOPS_PER_PARAMETER_TOKEN
    return G * per ** a, per ** b / G


def exponential_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(a, k, c) of y ≈ c + a exp(-k x) fitted through the points by least squares (c searched, a and k from a
    line through log(y - c)): what a power law seen on linear axes is easily taken for."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    best = (math.inf, 0.0, 0.0, 0.0)
    for c in np.min(y) - np.geomspace(1e-4, 1.0, 400) * (np.ptp(y) + 1e-12) * 4:
        slope, intercept = np.polyfit(x, np.log(y - c), 1)
        a, k = math.exp(intercept), -slope
        err = float(np.sum((c + a * np.exp(-k * x) - y) ** 2))
        if err < best[0]:
            best = (err, a, k, c)
    return best[1], best[2], best[3]
