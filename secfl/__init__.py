"""secfl: what uses all three libraries - the ``secfl`` command line and the benchmark library.

The layers point one way: ``secfl -> attacks -> fedattn -> secagg``.

* :mod:`secagg` - CKKS encryption of model updates, signed uploads, aggregation without a secret
  key, safe release;
* :mod:`fedattn` - attention aggregation rules, the protocols' roles, the simulation, data, DP and
  the Flower adapter;
* :mod:`attacks` - gradient inversion, membership inference, their metrics and the privacy audit;
* :mod:`secfl.cli` - the ``secfl`` command; :mod:`secfl.bench` - what ``secfl bench`` measures.
"""

__version__ = "0.1.0"
