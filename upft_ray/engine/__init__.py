"""Generation engines: the vLLM actor (with its stall watchdog), engine settings, models, prompts."""
