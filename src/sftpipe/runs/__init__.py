"""The run folder as a typed contract: run.json (`RunInfo`), completion markers, checkpoints, the model card,
the generation config, loading a run's model, tokenizer and template, and how a run is served (which run a
reference names, the template check, the renderer it trained with). Every stage reads and writes runs here."""

from .card import loss_name, update_eval, write_card
from .checkpoints import complete_checkpoints, is_complete, latest_checkpoint, write_marker
from .folder import RunFolder, check_name, require_complete, write_serving_files
from .info import SCHEMA_VERSION, RunInfo, TemplateInfo, read_info, write_info
from .load import checkpoint_names, load_base, load_run, load_tokenizer, weights_folder
from .meta import generation_config, git_commit, versions
from .serving import (RunRef, ServedRun, check_template, is_run, load_for_serving, load_front, render_config,
                      resolve, serving_renderer, template_sha256)

__all__ = ["SCHEMA_VERSION", "RunFolder", "RunInfo", "RunRef", "ServedRun", "TemplateInfo", "check_name",
           "check_template", "checkpoint_names", "complete_checkpoints", "generation_config", "git_commit",
           "is_complete", "is_run", "latest_checkpoint", "load_base", "load_for_serving", "load_front", "load_run",
           "load_tokenizer", "loss_name", "read_info", "render_config", "require_complete", "resolve",
           "serving_renderer", "template_sha256", "update_eval", "versions", "weights_folder", "write_card",
           "write_info", "write_marker", "write_serving_files"]
