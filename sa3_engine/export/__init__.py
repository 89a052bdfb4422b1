"""Model exports for other runtimes (CoreML); they sit above generation, whose conditioning they trace."""
