"""tunewise: the LoRA decision framework as a tool."""

import logging as _logging
import warnings as _warnings

__version__ = "0.1.0"

# bitsandbytes logs a warning at import when the optional `kernels` package (a hub download) is absent; its
# built-in CPU path works, so the message is noise for our users. PEFT 0.21 still calls a transformers attribute
# that transformers 5 marks deprecated.
_logging.getLogger("bitsandbytes").setLevel(_logging.ERROR)


class _DropMessages(_logging.Filter):
    """Drops a library's log records that start with one of `prefixes`; the rest of its logger still speaks."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: _logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


# On a CPU with AVX512-BF16, importing bitsandbytes (which PEFT does) asks the `kernels` package for an optional hub
# kernel; offline, `kernels` first logs that it skips the publisher trust check -- the line every command opened
# with -- and then the fetch fails and bitsandbytes uses its built-in CPU path. Only that line is dropped.
_logging.getLogger("kernels._internals.hf_hub").addFilter(_DropMessages("Skipping publisher trust check"))
_warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
