"""What persyn-hf's tests, benchmarks and demo build on: tiny local models (`fixtures`) and a local teacher server
that speaks the TGI and OpenAI-compatible protocols (`server`). Not used by the pipeline itself."""
