"""edgemed: fine-tune a small chat LLM on MedMCQA, export it to edge formats, benchmark them."""

import logging as _logging

__version__ = "0.1.0"

# bitsandbytes tries to fetch an optional CPU kernel from the Hugging Face hub (never possible offline,
# never needed: it falls back to its own kernel) and warns on every import; keep that line out of our output.
_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(lambda r: "kernels-community" not in r.getMessage())
