"""Supervised fine-tuning: `sft.run` (the `sftpipe train` stage), `merge.merge_run`, `load.load_run`, and the
model card (`card.update_eval` for the eval stage). Heavy imports (torch, transformers) happen inside modules."""
