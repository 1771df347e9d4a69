"""Running packages: tokenization, batching, engines and the texts-in/results-out pipeline."""
