"""Questions about a role set answered by the Z3 SMT solver (``bctl policy verify``).

Layer: policy (pure): role models and assertions in, answers out; no IO. ``assertions`` is the
file schema, ``regex`` and ``celsubset`` read selector expressions and ``where`` conditions,
``encode`` turns a role set into formulas over a symbolic user, node, login and request, and
``verify`` answers each assertion: it holds, a counterexample (replayed through the real
checker, :class:`~bastion.rbac.checker.RoleSet`), or unknown with the construct outside the
encoded fragment. docs/policy.md lists the fragment.
"""

from bastion.rbac.solver.assertions import Assertion, ResourceScope, UserScope, load_assertions
from bastion.rbac.solver.verify import Counterexample, Result, replay, verify, verify_one

__all__ = [
    "Assertion",
    "Counterexample",
    "ResourceScope",
    "Result",
    "UserScope",
    "load_assertions",
    "replay",
    "verify",
    "verify_one",
]
