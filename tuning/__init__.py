"""Matched tuning: every arm gets the same Optuna search budget, caps, sampler and seeds, and a report
a referee can check. Knows arms only through `tuning.interface`; imports no torch.

interface (arm callable + search spaces) · sources (by name: synthetic / reference_arms / yours) ·
protocol (the matching rules stored in the study) · harness (slots, workers, trials) · storage (URLs,
heartbeat and journal leases) · evaluation (final runs on fresh seeds) · stats · report · figures ·
cli (`matched-tuning`). Design: docs/tuning.md.
"""
