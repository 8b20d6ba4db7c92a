"""The one MedMCQA evaluator: every artifact is scored through the Runtime interface.

- ``command.run_eval(artifact, EvalConfig)``: what ``edgemed eval`` does (resolve, read questions, score, compare).
- ``run.evaluate(runtime, questions, scoring=...)`` -> ``EvalResult``; ``sweep.sweep(...)`` for generation settings.
- ``compare.compare(reference_predictions, predictions)``: agreement, KL, exact McNemar.
- ``metrics``: Wilson, McNemar, ECE, accuracy at coverage, test-size arithmetic (pure math).
"""
