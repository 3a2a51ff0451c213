"""Training what a search found: the bench's recipes, the trainer, knowledge distillation."""
