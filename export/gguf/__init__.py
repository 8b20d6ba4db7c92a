"""GGUF export: the llama.cpp converter and quantizer (``exporter``), its settings and flags (``settings``), the
importance matrix (``imatrix``), the type table (``types``), logged tool runs (``run``) and llama.cpp's own tools
(``tools``, their per-machine cache in ``tools_cache``)."""
