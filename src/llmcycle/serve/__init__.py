"""`llmcycle serve`: an OpenAI-compatible server with continuous batching, moderation, a web chat and feedback."""
