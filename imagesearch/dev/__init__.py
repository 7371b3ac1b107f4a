"""Development tooling: the demo, the evaluation harness, the procedural shapes world, the process
harness that starts API and workers as the Procfile does, and tiny models in production formats.

None of it runs in a deployed service; it needs the ``dev`` extra (matplotlib for charts).
"""
