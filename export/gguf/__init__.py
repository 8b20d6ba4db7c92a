"""GGUF export: the llama.cpp converter and quantizer, the importance matrix, the type table and llama.cpp's tools."""
