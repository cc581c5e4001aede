"""Evaluation: model-free parts (stats, checks, IFEval), generation, loss, judge, regression, score, report, and
the `sftpipe eval` stage (stage.run) that ties them together."""
