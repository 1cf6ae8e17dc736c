"""Metrics of generators on long-tailed data: every per-class metric from one generation and one feature pass.

Entry point: ``evaluator.Evaluator(data, cfg.eval, annotator, conditional=...).evaluate(generate)`` -> ``EvalResult``.
The metric groups are records of one registry, ``catalog.METRICS`` (names, scalar keys and directions, class labels,
needs, checks); docs/metrics.md prints its table and says how unconditional generators are labelled by the annotator.
"""
