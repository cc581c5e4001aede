"""The run folder as a typed contract: run.json (`RunInfo`), completion markers, checkpoints, the model card,
the generation config, and loading a run's model, tokenizer and template. Every stage reads and writes runs here."""

from .card import loss_name, update_eval, write_card
from .checkpoints import complete_checkpoints, is_complete, latest_checkpoint, write_marker
from .folder import RunFolder, check_name, require_complete, write_serving_files
from .info import SCHEMA_VERSION, RunInfo, TemplateInfo, read_info, write_info
from .load import checkpoint_names, load_base, load_run, load_tokenizer, split_ref, weights_folder
from .meta import generation_config, git_commit, versions

__all__ = ["SCHEMA_VERSION", "RunFolder", "RunInfo", "TemplateInfo", "check_name", "checkpoint_names",
           "complete_checkpoints", "generation_config", "git_commit", "is_complete", "latest_checkpoint", "load_base",
           "load_run", "load_tokenizer", "loss_name", "read_info", "require_complete", "split_ref", "update_eval",
           "versions", "weights_folder", "write_card", "write_info", "write_marker", "write_serving_files"]
