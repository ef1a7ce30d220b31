"""Performance model: memory figures and iteration times of a replica shape."""
