"""A user's app with one route, the same as the showcase's ``GET /demo/hello``: for
``bench/instructions.py --user-app``, which counts what a user's route costs."""

import canopy

app = canopy.App("bench")


@app.get("/demo/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
