"""Bench record -> model: seeded timm ViTs of both spaces, their closed-form #params and FLOPs,
and the distillation teacher."""
