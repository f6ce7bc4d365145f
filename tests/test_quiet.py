"""Third-party lines that tell the user nothing are silenced at their source, narrowly (issue 35)."""

from __future__ import annotations

import subprocess
import sys


def _stderr(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr


def test_importing_the_training_stack_says_nothing():
    # PEFT imports bitsandbytes, which (on a CPU with AVX512-BF16, offline) made `kernels` log a trust-check line
    assert _stderr("import tunewise, peft, transformers") == ""


def test_only_the_publisher_trust_line_of_kernels_is_dropped():
    said = _stderr("import logging, tunewise\n"
                   "log = logging.getLogger('kernels._internals.hf_hub')\n"
                   "log.warning(\"Skipping publisher trust check for 'kernels-community/x' because Hugging Face Hub "
                   "is in offline mode.\")\n"
                   "log.warning('Kernel repository could not verify publisher trust status.')\n")
    assert "Skipping publisher trust check" not in said
    assert "could not verify publisher trust status" in said  # the library's other warnings still reach the user
