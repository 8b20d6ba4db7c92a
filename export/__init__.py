"""edgemed.export: the merged model to edge formats.

- ``config``: ``ExportConfig``, every setting of one export (``edgemed export``'s flags; the pipeline builds one too);
- ``plan``: the checks before any work (source, output folder, names, settings, memory, up-to-date artifacts) and
  whether the GGUF chain may overlap the others;
- ``run``: ``run_export(merged, config)``, the orchestrator behind ``edgemed export`` (each format in its registry
  export chain, exported into a temp folder, verified, then placed); ``table``: the results as people read them;
- ``base``: the Exporter base class (format name, ``available()``, ``export(source, dest, settings)``) and the
  source checks/fingerprint;
- one module per format family: ``hf``, ``bnb``, ``onnx``, ``onnx_int4``, ``openvino``, ``gguf/`` (named by the
  registry's entries, ``edgemed.catalog``);
- ``verify``: each artifact against the merged model, through its own runtime (tolerance table there).
"""
