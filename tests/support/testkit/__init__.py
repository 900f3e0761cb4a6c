"""Helpers shared by the tests: CLI runner, loopback LLM servers, tiny models, row factories."""
