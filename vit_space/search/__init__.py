"""Training-free architecture search with a proxy: arch encoding and budgets, the candidate
scorer, the strategies, and the reports."""
