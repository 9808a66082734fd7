"""Methods: how parameters are adapted. Importing this package registers the built-in ones."""

from edgeft.methods.base import METHODS, Method, MethodOptions, get_method, register_method
from edgeft.methods import peft_methods, plain_methods  # noqa: F401  (registration)
from edgeft.methods.pac import method as _pac  # noqa
from edgeft.methods import mezo as _mezo  # noqa: F401  (registration)
from edgeft.methods import fwdgrad as _fwdgrad  # noqa: F401  (registration)

__all__ = ["METHODS", "Method", "MethodOptions", "get_method", "register_method"]
