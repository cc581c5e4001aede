"""`sftpipe export`: deployment bundles of a run and the merge core `sftpipe merge` shares.

`formats` maps each format name to its writer (`bundle`: hf, vllm; `gguf`, which runs llama.cpp's converter
through `llamacpp`); `merged` folds a run's adapter in and
saves it. The package imports nothing itself, so the CLI can read the format names without loading torch.
"""
