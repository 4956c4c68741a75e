"""Package data: the EmailEvents_CL table schema (the one source of truth for its columns)."""
