"""`sftpipe merge` output gets the user's umask (not mkdtemp's 0700), and replaces an old merge whole."""

import os
import stat

from sftpipe.stages.merge import run as merge_run
from sftpipe.stages.train import run


def test_merged_folder_and_files_follow_the_umask(make_cfg, tmp_path):
    result = run(make_cfg("train.max_steps=1"), progress=False)
    umask = os.umask(0)
    os.umask(umask)
    out = merge_run(result.run_dir, tmp_path / "merged").output
    assert merge_run(result.run_dir, tmp_path / "merged", overwrite=True).output == out
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask != 0o700
    files = [p for p in out.rglob("*") if p.is_file()]
    assert "model.safetensors" in {p.name for p in files}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask for p in files), \
        {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left
