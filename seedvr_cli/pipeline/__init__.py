"""The per-chunk numerical path: plan, preprocessing, conditioning, one-step sampling, colour correction."""
