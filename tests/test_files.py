"""Write-then-rename: the previous file survives a failed write, and no temporary file is left."""

import pytest

from c2s_pipeline.files import replacing, write_text


def test_write_text_replaces_the_file(tmp_path):
    path = write_text(tmp_path / "sub" / "a.json", "new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "a.pt"
    path.write_text("previous")
    with pytest.raises(OSError):
        with replacing(path) as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
