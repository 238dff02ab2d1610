"""The subcommands of ``xai-cxr``: each builds the configs from its flags (``configs``) and calls the package;
``cli.build_parser`` wires them to their flags."""
from .evaluation import cmd_audit, cmd_evaluate, cmd_explain, cmd_segment  # noqa: F401
from .serving import cmd_app, cmd_export, cmd_report, cmd_serve  # noqa: F401
from .training import cmd_compare, cmd_demo, cmd_fit_ood, cmd_phantoms, cmd_train  # noqa: F401
