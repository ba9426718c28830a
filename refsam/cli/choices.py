"""The values the ``refsam`` parser offers (choices, defaults shown in ``--help``), written out here so that
building the parser — and ``refsam --help`` — imports no numerical code. Each is a copy of its home's
constant, named beside it; tests/7_cli_docs/test_cli_papercuts.py pins every copy equal to its home."""

MODEL_NAMES = ("logistic", "softmax", "mlp")  # refsam.models.MODEL_NAMES
RULES = ("sam", "usam", "asam", "fisher", "friendly")  # refsam.sam.RULES
DIRECTIONS = ("sam", "gsam", "gnp")  # refsam.sam.DIRECTIONS
METHODS = ("closed_form", "closed_form_frozen", "closed_form_erm", "trajectory", "first_order",
           "first_order_unperturbed", "tracin", "tracin_unperturbed")  # refsam.apps.METHODS
TUNING_METHODS = ("auto", "closed_form", "trajectory")  # refsam.apps.TUNING_METHODS
TARGETS = ("trajectory", "trajectory_fd", "trajectory_parameters", "closed_form",  # refsam.kit.TARGETS
           "closed_form_frozen", "closed_form_erm", "closed_form_fd", "jacobian_products",
           "jacobian_T_products")
QUICK = {"n": 80, "steps": 100, "subset": 6}  # refsam.apps.demo.QUICK
DEFAULT_FLIP = 0.10  # refsam.apps.demo.DEFAULT_FLIP
BUILTIN_DATASETS = ("synthetic", "synthetic2d", "breast_cancer", "digits")  # refsam.data.BUILTIN_DATASETS
BANK_TARGETS = ("root", "run")  # refsam.apps.banks.TARGETS
BANK_KINDS = ("weights", "retrain")  # refsam.ground_truth.bank.KINDS
BANK_OUTPUTS = ("loss", "margin")  # refsam.ground_truth.bank.OUTPUTS
PEER_FORMATS = ("dattri", "trak", "kronfluence")  # refsam.kit.peers.PEER_FORMATS
