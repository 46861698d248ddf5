"""A sampler chain's settings as the tools themselves take them: transformers' generate() keyword arguments (the HF
order) and llama.cpp's command-line flags (the llama.cpp order), and what each tool has no setting for.
"""

from __future__ import annotations

from .sampling import SamplerSettings


def to_hf_kwargs(settings: SamplerSettings) -> dict:
    """Keyword arguments for transformers' generate() that give the HF-order chain."""
    s = settings
    if s.greedy:
        kwargs = {"do_sample": False}
    else:
        kwargs = {"do_sample": True, "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p}
        if s.min_p > 0:
            kwargs["min_p"] = s.min_p
        if s.typical_p < 1.0:
            kwargs["typical_p"] = s.typical_p
        if s.epsilon > 0:
            kwargs["epsilon_cutoff"] = s.epsilon
        if s.eta > 0:
            kwargs["eta_cutoff"] = s.eta
    if s.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = s.repetition_penalty
    return kwargs


def hf_leaves_out(settings: SamplerSettings) -> list[str]:
    """Settings transformers' generate() has no equivalent for, so its kwargs cannot carry them."""
    s = settings
    return [name for name, on in (("presence_penalty", s.presence_penalty != 0), ("frequency_penalty",
                                                                                  s.frequency_penalty != 0),
                                  ("top_n_sigma", s.top_n_sigma > 0), ("xtc", s.xtc_probability > 0),
                                  ("dry", s.dry_multiplier > 0)) if on]


def llama_cpp_leaves_out(settings: SamplerSettings) -> list[str]:
    """Settings llama.cpp has no step for."""
    return [name for name, on in (("epsilon", settings.epsilon > 0), ("eta", settings.eta > 0)) if on]


LLAMA_CPP_PROGRAM = "llama-completion"  # plain completion: llama-cli turns a GGUF with a chat template into a chat


def to_llama_cpp_flags(settings: SamplerSettings) -> str:
    """llama.cpp command-line flags for the llama.cpp-order chain (the penalty window over prompt and output)."""
    s = settings
    samplers = ["penalties", *(["dry"] if s.dry_multiplier > 0 else []), *(["top_n_sigma"] if s.top_n_sigma > 0
                                                                            else []),
                "top_k", "typ_p", "top_p", "min_p", *(["xtc"] if s.xtc_probability > 0 else []), "temperature"]
    flags = [
        f"--temp {s.temperature:g}", f"--top-k {s.top_k}", f"--top-p {s.top_p:g}", f"--min-p {s.min_p:g}",
        f"--typical {s.typical_p:g}", f"--repeat-penalty {s.repetition_penalty:g}",
        f"--repeat-last-n {s.repeat_last_n}",
        f"--presence-penalty {s.presence_penalty:g}", f"--frequency-penalty {s.frequency_penalty:g}",
        *([f"--top-n-sigma {s.top_n_sigma:g}"] if s.top_n_sigma > 0 else []),
        *([f"--xtc-probability {s.xtc_probability:g}", f"--xtc-threshold {s.xtc_threshold:g}"]
          if s.xtc_probability > 0 else []),
        *([f"--dry-multiplier {s.dry_multiplier:g}", f"--dry-base {s.dry_base:g}",
           f"--dry-allowed-length {s.dry_allowed_length}", f"--dry-penalty-last-n {s.dry_last_n}"]
          if s.dry_multiplier > 0 else []),
        f"--samplers '{';'.join(samplers)}'",
    ]
    return " ".join(flags)
