"""Files: reading question sources, the schemas stages exchange, durable fenced commits, the run lease."""
