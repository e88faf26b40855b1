"""genlab: a lab for the science of how deep networks generalize."""

__version__ = "0.1.0"
