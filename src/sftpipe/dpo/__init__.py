"""Preference training (DPO) on sftpipe's render: pairs, their tokenization, the SFT reference, TRL's trainer."""
