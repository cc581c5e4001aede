"""Curation: raw conversations -> deduplicated, PII-scrubbed, filtered, decontaminated, mixed and split data.

One module per stage (normalize, pii, dedup, filters, policy, decontam, quality, mix, split; near-duplicate
search in minhash); `pipeline.run_curate` runs them in order. Every dropped record carries its stage, reason and
details (see base.Drop).
"""
