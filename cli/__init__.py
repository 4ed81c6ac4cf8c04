"""The roof: the ``regionsync`` command (argument parsing and wiring) and the demo. Nothing of the
project imports it; each package adds its sub-commands through its own ``register()``."""
