"""Collection rules for the whole repository (doctests of every package included)."""

import importlib.util

# the Flower adapter's modules import flwr: without the flower extra their doctests cannot run
collect_ignore = [] if importlib.util.find_spec("flwr") else ["fedattn/flower"]
