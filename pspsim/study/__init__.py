"""What users touch: scenarios, the runner, results."""
