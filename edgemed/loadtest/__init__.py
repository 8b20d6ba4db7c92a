"""``edgemed loadtest``: a concurrency sweep against any OpenAI-compatible server (edgemed serve, llama-server,
vLLM), measured from the client over real HTTP (httpx) with streamed responses."""
