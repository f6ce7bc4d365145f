"""The output-folder rule: claim_dir takes new, empty or own folders and refuses the rest."""

from __future__ import annotations

import pytest

from tunewise.errors import TunewiseError
from tunewise.ownership import MARKER, claim_dir, read_marker


def test_a_half_written_marker_of_another_process_does_not_make_the_folder_foreign(tmp_path):
    # torchrun's ranks claim the same --out at once: one can see the other's marker mid atomic write
    out = tmp_path / "run"
    out.mkdir()
    (out / f"{MARKER}.k2j3h4.tmp").write_text("{")
    claim_dir(out, "run")
    assert read_marker(out) == {"kind": "run", "for": None}


def test_a_user_file_that_only_looks_like_the_marker_is_still_foreign(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / f"{MARKER}.bak").write_text("mine")
    with pytest.raises(TunewiseError, match=r"not empty \(\.tunewise\.bak\) and tunewise did not write it"):
        claim_dir(out, "run")
