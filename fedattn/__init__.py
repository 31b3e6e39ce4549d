"""fedattn: attention-weighted federated aggregation, in plaintext and on CKKS ciphertexts."""

__version__ = "0.1.0"
