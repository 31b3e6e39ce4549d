"""What encryption costs, next to the alternatives, measured side by side in one run.

* :mod:`secfl.bench.cells` - one method at one size (client, server, key holder), slopes, targets;
* :mod:`secfl.bench.grid` - the grid of cells ``secfl bench`` measures, and the run;
* :mod:`secfl.bench.threads` - the secagg servers on several fold threads;
* :mod:`secfl.bench.baselines` - the methods: plaintext, secagg presets, NVIDIA FLARE's TenSEAL
  usage, Flower's SecAgg+ masking;
* :mod:`secfl.bench.rounds` - one federated round, plaintext vs encrypted;
* :mod:`secfl.bench.report` - ``bench.json``, the plots and the Markdown tables.
"""
