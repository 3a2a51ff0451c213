"""DEAP's `creator` classes, created once per process (creator is global; creating a class twice
warns and replaces it, which would break individuals made before)."""
from deap import base, creator, gp


def ensure_creator_classes():
    if not hasattr(creator, "ProxyFitness"):
        creator.create("ProxyFitness", base.Fitness, weights=(1.0,))
    if not hasattr(creator, "ProxyIndividual"):
        creator.create("ProxyIndividual", gp.PrimitiveTree, fitness=creator.ProxyFitness)
    return creator.ProxyIndividual


def as_individual(tree) -> "creator.ProxyIndividual":
    return ensure_creator_classes()(list(tree))


def ensure_pareto_classes():
    """The two-objective classes of NSGA-II: JCM maximised, tree size minimised."""
    if not hasattr(creator, "ParetoFitness"):
        creator.create("ParetoFitness", base.Fitness, weights=(1.0, -1.0))
    if not hasattr(creator, "ParetoIndividual"):
        creator.create("ParetoIndividual", gp.PrimitiveTree, fitness=creator.ParetoFitness)
    return creator.ParetoIndividual
