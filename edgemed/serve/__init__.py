"""``edgemed serve``: artifacts behind an OpenAI-compatible HTTP API, each in an engine process of its own that runs
the same runtime code the bench measures, with a calibrated abstention on multiple-choice questions.

Modules: ``config`` (ServeConfig), ``identity`` (artifact id, digest, lineage), ``chat`` (chat-template rendering),
``protocol`` (request validation, OpenAI error shape), ``engine`` (the engine process and its bounded queue),
``routing`` (aliases with weights, sticky per user, atomic reload), ``abstain`` (the threshold and the answer of
/v1/mcq), ``metrics`` (Prometheus), ``app`` (the FastAPI routes), ``server`` (uvicorn with drain on SIGTERM)."""
