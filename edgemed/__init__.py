"""edgemed: fine-tune a small chat LLM on MedMCQA, export it to edge formats, benchmark them."""

__version__ = "0.1.0"
