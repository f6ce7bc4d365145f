"""tunewise: the LoRA decision framework as a tool."""

import logging as _logging
import warnings as _warnings

__version__ = "0.1.0"

# bitsandbytes logs a warning at import when the optional `kernels` package (a hub download) is absent; its
# built-in CPU path works, so the message is noise for our users. PEFT 0.21 still calls a transformers attribute
# that transformers 5 marks deprecated.
_logging.getLogger("bitsandbytes").setLevel(_logging.ERROR)
_warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
