"""Commands that read the store or explain the seed tasks: report, worked, compare-activations, compare, model-summary."""
