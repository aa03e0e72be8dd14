"""tfsuite apps package."""
