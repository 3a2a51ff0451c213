"""A typed primitive set for zero-cost proxies, usable without ViTs (no import of vit_space)."""
from primitives.evaluate import evaluate_tree
from primitives.formula import FormulaError, parse_formula
from primitives.generate import generate_tree
from primitives.pset import build_primitive_set, display_name
from primitives.types import Gram, Scalar, TensorType, gram_type, tensor_type

__all__ = ["FormulaError", "Gram", "Scalar", "TensorType", "build_primitive_set", "display_name",
           "evaluate_tree", "generate_tree", "gram_type", "parse_formula", "tensor_type"]
