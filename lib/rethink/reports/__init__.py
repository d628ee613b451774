"""The chapters' tables, figures and verdict rules, one module per experiment module.

``rules`` holds what every verdict rests on (t intervals, Fisher-z, preconditions, the
vocabulary); each chapter module has ``verdicts(...) -> list[dict]`` covering every claim
of its paper, tested on constructed records in tests/test_reports_*.py.
"""
