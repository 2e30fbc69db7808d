"""Matched tuning: every arm gets the same Optuna search budget, caps, sampler and seeds, and a report
a referee can check. Knows arms only through `tuning.interface`; imports no torch.

interface (arm callable + search spaces) · synthetic / reference_arms (arm sources) · protocol (the
matching rules stored in the study) · harness (slots, workers, trials) · storage (URLs, heartbeat and
journal leases) · stats · report · cli (`matched-tuning`). Design: docs/tuning.md.
"""
