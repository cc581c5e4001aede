"""The export folders that serve a run (`sftpipe export` bundles, `<run>/merged`, folders the config names) and
the template and eos ids each one serves with; shared by the template and run checks."""

from __future__ import annotations

from pathlib import Path

from ..runs import template_sha256
from .context import Context, read_json


def export_folders(ctx: Context) -> list[Path]:
    """Bundles that serve this run: `sftpipe export` folders (an export.json naming the run, in the project folder
    two levels deep or in the run folder), `<run>/merged`, and folders the export / serve sections name."""
    found: list[Path] = []
    if ctx.run_dir is not None:
        found += [ctx.run_dir / "merged", *sorted(ctx.run_dir.glob("export*"))]
        here = ctx.run_dir.resolve()
        for record in sorted({*Path(".").glob("*/export.json"), *Path(".").glob("*/*/export.json"),
                              *ctx.run_dir.glob("*/export.json")}):
            run = (read_json(record) or {}).get("run_dir")
            if isinstance(run, str) and Path(run).resolve() == here:
                found.append(record.parent)
    for name in ("export", "serve"):
        for key in ("out_dir", "output", "output_dir", "path", "model"):
            value = ctx.section(name).get(key)
            if isinstance(value, str) and value:
                found.append(Path(value))
    return [p for p in dict.fromkeys(found) if (p / "tokenizer_config.json").is_file() or (p / "export.json").is_file()]


def bundle_template(folder: Path) -> tuple[str | None, set[int]]:
    """(template sha256, eos ids) a bundle serves with: its tokenizer_config.json and generation_config.json, or for a
    GGUF bundle the template in the file's metadata and the eos ids export.json records."""
    if (folder / "tokenizer_config.json").is_file():
        return (template_sha256((read_json(folder / "tokenizer_config.json") or {}).get("chat_template")),
                eos_ids(read_json(folder / "generation_config.json")))
    record = read_json(folder / "export.json") or {}
    eos = eos_ids(record)
    name = record.get("file")
    if not isinstance(name, str) or not (folder / Path(name).name).is_file():
        return None, eos
    import gguf

    field = gguf.GGUFReader(folder / Path(name).name).fields.get("tokenizer.chat_template")
    return (template_sha256(bytes(field.parts[field.data[0]]).decode("utf-8")) if field is not None else None), eos


def eos_ids(gen: dict | None) -> set[int]:
    """The eos ids a generation_config.json or export.json records."""
    value = (gen or {}).get("eos_token_id")
    return set(value) if isinstance(value, list) else {value} if isinstance(value, int) else set()
