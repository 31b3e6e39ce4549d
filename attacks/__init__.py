"""attacks: gradient inversion and membership inference on exactly what each party sees.

An attack takes what a party observed - a server's :class:`fedattn.RoundView` (every update under
plain FedAvg, the released aggregate under CKKS), or a trained model - and returns scores or
reconstructions that :mod:`attacks.metrics` measures. The whole flow on one real round::

    >>> import numpy as np, fedattn, attacks
    >>> result = fedattn.run_simulation(fedattn.SimulationConfig(clients=2, rounds=1, protection="plain"))
    >>> view = result.views[0]                       # the server's view of round 0
    >>> sorted(view.client_updates)                  # plain FedAvg shows it every update
    ['client-0', 'client-1']
    >>> data = fedattn.load_dataset("digits")
    >>> model = fedattn.make_model("mlp", input_shape=data.input_shape, n_classes=data.n_classes, seed=0)
    >>> fedattn.load_float_state(model, dict(view.model_sent))
    >>> gradient = attacks.client_observations(model, data.x_train[:1], data.y_train[:1], n_clients=1, batch_size=1)[0]
    >>> rec = attacks.analytic_first_layer(model, gradient, input_shape=data.input_shape)  # one example: exact
    >>> bool(attacks.match_reconstructions(data.x_train[:1], rec.reconstructions).psnr[0] > 40)
    True
    >>> scores = attacks.loss_attack(model, data.x_test[:50], data.y_test[:50])
    >>> scores.shape
    (50,)

The privacy audit that runs all of them under each protection: :func:`run_audit` and
:func:`write_report` (``secfl audit``).
"""

from .audit import ATTACKS, PROTECTIONS, AuditConfig, AuditReport, run_audit
from .inversion import (
    AttackerKnowledge,
    InversionError,
    InversionResult,
    analytic_first_layer,
    dlg,
    fedavg_update,
    gradient_of,
    invert_fedavg_update,
    inverting_gradients,
    recover_labels,
)
from .membership import (
    MembershipError,
    ShadowModels,
    lira,
    logit_confidence,
    loss_attack,
    train_model,
    train_shadow_models,
)
from .metrics import (
    MetricInputError,
    identifiability,
    label_accuracy,
    match_reconstructions,
    membership_metrics,
    mse,
    psnr,
    roc_curve,
    ssim,
    tpr_at_fpr,
)
from .report import summary_rows, write_report
from .views import client_observations, dp_noised_mean, released_mean

__all__ = [
    "ATTACKS", "PROTECTIONS", "AuditConfig", "AuditReport", "run_audit", "AttackerKnowledge", "InversionError",
    "InversionResult", "analytic_first_layer", "dlg", "fedavg_update", "gradient_of", "invert_fedavg_update",
    "inverting_gradients", "recover_labels", "MembershipError", "ShadowModels", "lira", "logit_confidence", "loss_attack",
    "train_model", "train_shadow_models", "MetricInputError", "identifiability", "label_accuracy", "match_reconstructions",
    "membership_metrics", "mse", "psnr", "roc_curve", "ssim", "tpr_at_fpr", "summary_rows", "write_report",
    "client_observations", "dp_noised_mean", "released_mean",
]
__version__ = "0.1.0"
