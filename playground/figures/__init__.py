"""Pure plotting functions by subject: `base` (layout, colours), `tokens`, `attention`, `lens`, `rope`, `sampler`."""
