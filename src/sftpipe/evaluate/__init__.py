"""Evaluation pieces: model-free parts (stats, IFEval), generation, loss, judge, regression, score, report, and
`evaluator` (one model's metrics, comparisons, selection). The stage is `sftpipe.stages.eval`."""
