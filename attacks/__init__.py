"""attacks: gradient inversion and membership inference on exactly what each party sees."""

__version__ = "0.1.0"
