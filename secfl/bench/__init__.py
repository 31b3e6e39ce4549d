"""What encryption costs, next to the alternatives, measured side by side in one run.

* :mod:`secfl.bench.cells` - one method at one size (client, server, key holder), the grid, slopes;
* :mod:`secfl.bench.baselines` - the methods: plaintext, secagg presets, NVIDIA FLARE's TenSEAL
  usage, Flower's SecAgg+ masking;
* :mod:`secfl.bench.rounds` - one federated round, plaintext vs encrypted;
* :mod:`secfl.bench.report` - ``bench.json``, the plots and the Markdown tables.
"""
