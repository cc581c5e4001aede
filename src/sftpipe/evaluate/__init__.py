"""Evaluation components: stats, checks, IFEval (model-free); generation, loss and judge build on them."""
