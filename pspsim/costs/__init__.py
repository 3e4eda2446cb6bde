"""Cost parameters and where they come from (see :mod:`pspsim.costs.params`)."""

from pspsim.costs.params import Costs, Parameter, ParameterSet, load_parameter_set

__all__ = ["Costs", "Parameter", "ParameterSet", "load_parameter_set"]
