"""edgemed.export: the merged model to edge formats.

- ``base``: the Exporter base class (format name, ``available()``, ``export(source, dest, settings)``) and the
  source checks/fingerprint;
- one module per format family: ``hf``, ``bnb``, ``onnx``, ``gguf`` (named by ``edgemed.registry.FORMATS``);
- ``verify``: each artifact against the merged model, through its own runtime (tolerance table there);
- ``run``: ``run_export(merged, formats, out, force, verify, threads)``, the orchestrator behind ``edgemed export``.
"""
