"""The Redis projection of segments: the writer and its Lua scripts."""
