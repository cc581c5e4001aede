"""`sftpipe export`: deployment bundles of a run (hf, vllm, gguf) and the merge core `sftpipe merge` shares."""

from .bundle import end_of_turn_eos, write_hf, write_vllm
from .merged import DTYPES, atomic_folder, merged_model, save_model, torch_dtype

__all__ = ["DTYPES", "atomic_folder", "end_of_turn_eos", "merged_model", "save_model", "torch_dtype", "write_hf",
           "write_vllm"]
