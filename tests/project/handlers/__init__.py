"""The project's own ``handlers`` package: a name Canopy must not take."""


def greet(greeting: str, name: str) -> str:
    return f"{greeting}, {name}"
