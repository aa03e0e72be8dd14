"""tfsuite pipelines package."""
