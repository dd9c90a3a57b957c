"""The project's own ``server`` module: a name Canopy must not take."""

NAME = "the shop's own server module"
