"""What a Flower client's Ray worker would show: notices a user can do nothing about stay out of the terminal."""

import logging
import warnings


def test_flower_evaluation_notice_and_torch_jit_notice_are_dropped_in_a_client():
    from edgeft.quiet import quiet_libraries

    with warnings.catch_warnings(record=True) as seen:
        # Flower's Ray transport turns every DeprecationWarning on ("once") when a worker imports it
        warnings.filterwarnings("once", category=DeprecationWarning)
        quiet_libraries()  # as session.setup_for does in the worker
        # torch.autograd.forward_ad (fwdgrad's jvp) scripts its decompositions on first use
        warnings.warn_explicit("`torch.jit.script` is deprecated. Please switch to `torch.compile` or "
                               "`torch.export`.", DeprecationWarning, "_script.py", 1488, module="torch.jit._script")
        warnings.warn_explicit("something else is deprecated", DeprecationWarning, "x.py", 1, module="mylib")
    assert [str(w.message) for w in seen] == ["something else is deprecated"]
    record = logging.LogRecord("flwr", logging.WARNING, "", 0, "fraction_evaluate is set to 0.0. Federated "
                               "evaluation will be skipped.", None, None)
    assert not logging.getLogger("flwr").filter(record)  # FedIT's server evaluates the global model itself
