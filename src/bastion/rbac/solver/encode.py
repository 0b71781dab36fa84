"""A role set as Z3 formulas over a symbolic user, node, login and request.

Layer: policy (pure). Mirrors :meth:`bastion.rbac.checker.RoleSet.check_node_access` (read it
first): deny logins and deny node labels win (a conditional deny applies while its condition
holds *or cannot be evaluated*), then one role must grant the login and match the labels with
its condition holding; per-session MFA is required when the cluster requires it or every
granting role does.

The symbolic world:

* the user: one Boolean per role of the set (holds it or not), a name, and traits: per trait
  name a "present" flag and a bounded list of values. One value per distinct membership
  question about the trait is enough: any real counterexample keeps its truth values when
  every value that is no witness of a true membership is dropped;
* the node: a name, and per label key a "present" flag and a value;
* the login, and the request: ``mfa_verified``, ``source_ip``, and the hour, minute and day of
  the week of ``request.time``.

What cannot be encoded exactly becomes a fresh free Boolean (*havoc*) with a reason: the
formulas then over-approximate the checker, so "no violation" still proves the assertion, and
a violation found is replayed by the real checker before it is reported
(:mod:`bastion.rbac.solver.verify`). Havocs that only arise for unusual trait values (a trait
value that is itself a regular expression) carry a *guard*, so a second search can exclude
them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import z3

from bastion.rbac.labels import WILDCARD, is_regex
from bastion.rbac.solver import celsubset as ast
from bastion.rbac.solver.regex import Unsupported, to_z3
from bastion.types.access import Role
from bastion.types.templates import EmailLocal, Template, parse_template

__all__ = ["Encoder", "TraitSlots", "lit"]

_RE_SORT = z3.ReSort(z3.StringSort())
_META = "\\.^$*+?{}[]|()"
_SAFE = z3.Intersect(
    z3.AllChar(_RE_SORT), z3.Complement(z3.Union(*[z3.Re(z3.StringVal(c)) for c in _META]))
)
"""Characters that stand for themselves in a Python regular expression."""
_TIME_PARTS = {"getHours": (0, 23), "getMinutes": (0, 59), "getDayOfWeek": (0, 6)}


def lit(text: str) -> Any:
    """A Z3 string literal; built from code points when Z3 would read an escape in it."""
    if "\\" not in text:
        return z3.StringVal(text)
    if not text:
        return z3.StringVal("")
    units = [z3.Unit(z3.CharVal(ord(c))) for c in text]
    return units[0] if len(units) == 1 else z3.Concat(*units)


@dataclass(slots=True)
class TraitSlots:
    """One trait: present or not, and witness values (``used`` flag, value) per slot."""

    present: Any
    atoms: list[tuple[Any, Callable[[Any], Any]]] = field(default_factory=list)
    slots: list[tuple[Any, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Term:
    kind: str
    """``str``, ``int``, ``bool``, ``trait`` (a trait's list), ``roles``, ``labels``,
    ``traits`` or ``list``."""
    expr: Any = None
    err: Any = False
    name: str = ""
    items: tuple[_Term, ...] = ()


class Encoder:
    """Builds the formulas for one role set; one per question (it accumulates atoms)."""

    def __init__(self, roles: Sequence[Role]) -> None:
        self.roles = tuple(roles)
        self.has_role = {r.metadata.name: z3.Bool(f"role[{r.metadata.name}]") for r in roles}
        self.user_name = z3.String("user.name")
        self.node_name = z3.String("node.name")
        self.login = z3.String("login")
        self.mfa_verified = z3.Bool("request.mfa_verified")
        self.source_ip = z3.String("request.source_ip")
        self.time: dict[str, Any] = {}
        self.labels: dict[str, tuple[Any, Any]] = {}
        self.traits: dict[str, TraitSlots] = {}
        self.unknowns: list[str] = []
        """Why some formulas over-approximate (each reason once)."""
        self.guards: list[Any] = []
        """Conditions under which a guarded havoc is in play."""
        self.strings: list[Any] = [self.user_name, self.node_name, self.login, self.source_ip]
        self._atoms: dict[tuple[str, ...], Any] = {}
        self._conditions: dict[str, tuple[Any, Any]] = {}
        self._fresh = itertools.count()

    # -- the symbolic world ----------------------------------------------------------------

    def label(self, key: str) -> tuple[Any, Any]:
        """(present, value) of the node's label ``key``."""
        if key not in self.labels:
            value = z3.String(f"label[{key}]")
            self.labels[key] = (z3.Bool(f"has label[{key}]"), value)
            self.strings.append(value)
        return self.labels[key]

    def trait(self, name: str) -> TraitSlots:
        if name not in self.traits:
            self.traits[name] = TraitSlots(present=z3.Bool(f"has trait[{name}]"))
        return self.traits[name]

    def trait_atom(self, name: str, key: tuple[str, ...], pred: Callable[[Any], Any]) -> Any:
        """A Boolean that is true iff some value of trait ``name`` satisfies ``pred``."""
        full = ("trait", name, *key)
        if full not in self._atoms:
            atom = z3.Bool(f"atom{next(self._fresh)}[{name}]")
            self.trait(name).atoms.append((atom, pred))
            self._atoms[full] = atom
        return self._atoms[full]

    def havoc(self, reason: str, guard: Any = None) -> Any:
        """A free Boolean standing for something the encoding cannot express."""
        if reason not in self.unknowns:
            self.unknowns.append(reason)
        if guard is not None:
            self.guards.append(guard)
        return z3.Bool(f"havoc{next(self._fresh)}")

    def fresh_string(self, hint: str) -> Any:
        value = z3.String(f"{hint}{next(self._fresh)}")
        self.strings.append(value)
        return value

    def time_part(self, method: str) -> Any:
        if method not in self.time:
            self.time[method] = z3.Int(f"request.time.{method}()")
        return self.time[method]

    def finalize(self) -> list[Any]:
        """The constraints that tie atoms to trait slots (call once, after every formula)."""
        out: list[Any] = []
        for name, trait in self.traits.items():
            for i in range(len(trait.atoms)):
                used, value = z3.Bool(f"trait[{name}][{i}].used"), z3.String(f"trait[{name}][{i}]")
                trait.slots.append((used, value))
                self.strings.append(value)
                out.append(z3.Implies(used, trait.present))
            for atom, pred in trait.atoms:
                out.append(atom == z3.Or([z3.And(u, pred(v)) for u, v in trait.slots]))
        for method, var in self.time.items():
            lo, hi = _TIME_PARTS[method]
            out.append(z3.And(var >= lo, var <= hi))
        return out

    # -- the checker --------------------------------------------------------------------------

    def node_access(self, *, cluster_requires_mfa: bool = False) -> tuple[Any, Any]:
        """(allowed, mfa_required) of ``check_node_access`` with a request context."""
        denied = []
        grants = []
        for role in self.roles:
            name = role.metadata.name
            held = self.has_role[name]
            allow, deny = role.spec.allow, role.spec.deny
            deny_applies: Any = z3.BoolVal(True)
            if deny.where:
                value, err = self.condition(deny.where, name)
                deny_applies = z3.Or(value, err)
            if deny.logins:
                denied.append(z3.And(held, self.login_in(deny.logins, name), deny_applies))
            if deny.node_labels:
                denied.append(z3.And(held, self.selector(deny.node_labels, name), deny_applies))
            if not allow.logins or not allow.node_labels:
                continue
            grant = z3.And(
                held, self.login_in(allow.logins, name), self.selector(allow.node_labels, name)
            )
            if allow.where:
                value, err = self.condition(allow.where, name)
                grant = z3.And(grant, value, z3.Not(err))
            grants.append((grant, role.spec.options.require_session_mfa))
        allowed = z3.And(z3.Not(z3.Or(denied)), z3.Or([g for g, _ in grants]))
        without_mfa = [g for g, needs_mfa in grants if not needs_mfa]
        if cluster_requires_mfa:
            return allowed, allowed
        return allowed, z3.And(allowed, z3.Not(z3.Or(without_mfa)))

    # -- selectors, logins, templates ---------------------------------------------------------

    def selector(self, selector: Mapping[str, Sequence[str]], role: str) -> Any:
        """Does the node match this label selector (:class:`bastion.rbac.labels.LabelSelector`)?"""
        match_all = False
        entries = []
        for key, values in selector.items():
            if key == WILDCARD and WILDCARD in values:
                match_all = True
                continue
            present, value = self.label(key)
            entries.append(z3.And(present, self.value_matches(values, value, role)))
        if not entries:
            return z3.BoolVal(match_all)
        return z3.And(entries)

    def value_matches(self, values: Sequence[str], subject: Any, role: str) -> Any:
        """:meth:`bastion.rbac.labels.ValueMatcher.matches` over the symbolic ``subject``."""
        options = []
        for value in values:
            if "{{" in value or "}}" in value:
                options.append(self._template(parse_template(value), subject, role, label=True))
            elif value == WILDCARD:
                return z3.BoolVal(True)
            elif is_regex(value):
                try:
                    options.append(z3.InRe(subject, to_z3(value)))
                except Unsupported as exc:
                    options.append(
                        self.havoc(f'role "{role}": regular expression {value!r}: {exc}')
                    )
            else:
                options.append(subject == lit(value))
        return z3.Or(options) if options else z3.BoolVal(False)

    def login_in(self, values: Sequence[str], role: str) -> Any:
        """Is the login among these (expanded) logins? Logins are compared exactly."""
        options = []
        for value in values:
            if "{{" in value or "}}" in value:
                options.append(self._template(parse_template(value), self.login, role, label=False))
            else:
                options.append(self.login == lit(value))
        return z3.Or(options) if options else z3.BoolVal(False)

    def _template(self, template: Template, subject: Any, role: str, *, label: bool) -> Any:
        if template.namespace is None:
            return subject == lit(template.text)
        if template.transform is not None and not isinstance(template.transform, EmailLocal):
            return self.havoc(f'role "{role}": template {template.text!r} (regexp.replace)')

        def pred(witness: Any) -> Any:
            if isinstance(template.transform, EmailLocal):
                local, domain = self.fresh_string("local"), self.fresh_string("domain")
                shape = z3.And(
                    witness == z3.Concat(local, z3.StringVal("@"), domain),
                    z3.Not(z3.Contains(domain, z3.StringVal("@"))),
                    z3.Length(local) > 0,
                    z3.Length(domain) > 0,
                )
                value = local
            else:
                shape, value = z3.Length(witness) > 0, witness
            expanded = z3.Concat(lit(template.prefix), value, lit(template.suffix))
            if not label:
                return z3.And(shape, subject == expanded)
            return z3.And(shape, self._expanded_matches(expanded, subject, template.text, role))

        key = ("label" if label else "login", template.text, str(subject))
        return self.trait_atom(template.trait, key, pred)

    def _expanded_matches(self, expanded: Any, subject: Any, text: str, role: str) -> Any:
        """An expanded label value: ``*``, a ``^regex$`` (trait values may be one), or exact."""
        star = expanded == z3.StringVal(WILDCARD)
        shaped = z3.And(
            z3.Length(expanded) >= 2,
            z3.PrefixOf(z3.StringVal("^"), expanded),
            z3.SuffixOf(z3.StringVal("$"), expanded),
        )
        body = self.fresh_string("regex")
        plain_regex = z3.And(
            expanded == z3.Concat(z3.StringVal("^"), body, z3.StringVal("$")),
            z3.InRe(body, z3.Star(_SAFE)),
        )
        any_line = expanded == z3.StringVal("^.*$")
        other = z3.And(shaped, z3.Not(plain_regex), z3.Not(any_line))
        reason = (
            f'role "{role}": a trait value that is a regular expression (other than ^text$ and '
            f"^.*$) expanding {text!r}"
        )
        return z3.Or(
            star,
            z3.And(z3.Not(shaped), subject == expanded),
            z3.And(plain_regex, subject == body),
            z3.And(any_line, z3.Not(z3.Contains(subject, z3.StringVal("\n")))),
            z3.And(other, self.havoc(reason, guard=other)),
        )

    # -- conditions ---------------------------------------------------------------------------

    def condition(self, text: str, role: str) -> tuple[Any, Any]:
        """(value, error) of a ``where`` expression; the same text, the same outcome."""
        if text not in self._conditions:
            try:
                node = ast.parse(text)
            except ast.ParseError as exc:
                reason = f'role "{role}": where {text!r}: {exc}'
                self._conditions[text] = (self.havoc(reason), self.havoc(reason))
            else:
                self._conditions[text] = _Conditions(self, text, role).boolean(node)
        return self._conditions[text]


class _Conditions:
    """Translates one parsed condition; CEL's ``&&``/``||`` absorb errors commutatively."""

    def __init__(self, enc: Encoder, text: str, role: str) -> None:
        self.enc = enc
        self.text = text
        self.role = role

    def unknown(self, what: str) -> tuple[Any, Any]:
        reason = f'role "{self.role}": where {self.text!r}: {what} is outside the encoded fragment'
        return self.enc.havoc(reason), self.enc.havoc(reason)

    def boolean(self, node: ast.Node) -> tuple[Any, Any]:
        if isinstance(node, ast.Unary) and node.op == "!":
            value, err = self.boolean(node.operand)
            return z3.Not(value), err
        if isinstance(node, ast.Binary) and node.op in ("&&", "||"):
            (lv, le), (rv, re_) = self.boolean(node.left), self.boolean(node.right)
            if node.op == "&&":
                decided = z3.Or(z3.And(z3.Not(le), z3.Not(lv)), z3.And(z3.Not(re_), z3.Not(rv)))
                err = z3.And(z3.Not(decided), z3.Or(le, re_))
                return z3.And(z3.Not(decided), z3.Not(err)), err
            decided = z3.Or(z3.And(z3.Not(le), lv), z3.And(z3.Not(re_), rv))
            return decided, z3.And(z3.Not(decided), z3.Or(le, re_))
        if isinstance(node, ast.Binary) and node.op in ("==", "!=", "<", "<=", ">", ">=", "in"):
            return self.relation(node)
        if isinstance(node, ast.Call) and node.target is None and node.name == "has":
            return self.has(node)
        if isinstance(node, ast.Call) and node.name in ("startsWith", "endsWith", "contains"):
            return self.string_test(node)
        term = self.term(node)
        if term is not None and term.kind == "bool":
            return term.expr, term.err
        return self.unknown(_describe(node))

    def has(self, node: ast.Call) -> tuple[Any, Any]:
        arg = node.args[0] if len(node.args) == 1 else None
        if isinstance(arg, ast.Member):
            base = _path(arg.target)
            if base == "resource.labels":
                return self.enc.label(arg.field)[0], z3.BoolVal(False)
            if base == "user.traits":
                return self.enc.trait(arg.field).present, z3.BoolVal(False)
        return self.unknown("has() of this field")

    def string_test(self, node: ast.Call) -> tuple[Any, Any]:
        target = self.term(node.target) if node.target is not None else None
        arg = self.term(node.args[0]) if len(node.args) == 1 else None
        if target is None or arg is None or target.kind != "str" or arg.kind != "str":
            return self.unknown(f"{node.name}() on this value")
        test = {"startsWith": z3.PrefixOf, "endsWith": z3.SuffixOf}.get(node.name)
        value = test(arg.expr, target.expr) if test else z3.Contains(target.expr, arg.expr)
        return value, z3.Or(target.err, arg.err)

    def relation(self, node: ast.Binary) -> tuple[Any, Any]:
        left, right = self.term(node.left), self.term(node.right)
        if left is None or right is None:
            return self.unknown(f"the operands of {node.op!r}")
        err = z3.Or(left.err, right.err)
        if node.op == "in":
            return self.membership(left, right, err)
        if left.kind != right.kind or left.kind not in ("str", "int", "bool"):
            return self.unknown(f"{node.op!r} between {left.kind} and {right.kind}")
        if node.op in ("==", "!="):
            same = left.expr == right.expr
            return (same if node.op == "==" else z3.Not(same)), err
        if left.kind != "int":
            return self.unknown(f"{node.op!r} on {left.kind} values")
        compare: dict[str, Callable[[Any, Any], Any]] = {
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
        }
        return compare[node.op](left.expr, right.expr), err

    def membership(self, left: _Term, right: _Term, err: Any) -> tuple[Any, Any]:
        enc = self.enc
        if right.kind == "trait" and left.kind == "str":
            trait = enc.trait(right.name)
            subject = left.expr
            atom = enc.trait_atom(right.name, ("in", str(subject)), lambda w: w == subject)
            return atom, z3.Or(err, z3.Not(trait.present))
        if right.kind == "roles" and left.kind == "str":
            options = [z3.And(held, left.expr == lit(name)) for name, held in enc.has_role.items()]
            return z3.Or(options) if options else z3.BoolVal(False), err
        if right.kind == "list" and all(i.kind == left.kind for i in right.items):
            options = [left.expr == item.expr for item in right.items]
            return z3.Or(options) if options else z3.BoolVal(False), err
        if right.kind in ("labels", "traits") and left.kind == "str" and _is_literal(left):
            key = z3.simplify(left.expr).as_string()
            present = enc.label(key)[0] if right.kind == "labels" else enc.trait(key).present
            return present, err
        return self.unknown(f"'in' over {right.kind}")

    def term(self, node: ast.Node) -> _Term | None:
        enc = self.enc
        false = z3.BoolVal(False)
        if isinstance(node, ast.Lit):
            if isinstance(node.value, bool):
                return _Term("bool", z3.BoolVal(node.value), false)
            if isinstance(node.value, int):
                return _Term("int", z3.IntVal(node.value), false)
            if isinstance(node.value, str):
                return _Term("str", lit(node.value), false)
            return None
        if isinstance(node, ast.ListLit):
            items = [self.term(i) for i in node.items]
            if any(i is None for i in items):
                return None
            known = tuple(i for i in items if i is not None)
            return _Term("list", None, z3.Or([i.err for i in known] or [false]), items=known)
        if isinstance(node, ast.Call) and node.name in _TIME_PARTS and not node.args:
            if node.target is not None and _path(node.target) == "request.time":
                return _Term("int", enc.time_part(node.name), false)
            return None
        if isinstance(node, ast.Index) and isinstance(node.key, ast.Lit):
            if isinstance(node.key.value, str):
                return self.field(_path(node.target), node.key.value)
            return None
        if isinstance(node, ast.Member):
            return self.field(_path(node.target), node.field)
        path = _path(node)
        simple = {
            "user.roles": _Term("roles"),
            "resource.labels": _Term("labels"),
            "user.traits": _Term("traits"),
        }
        return simple.get(path)

    def field(self, base: str, name: str) -> _Term | None:
        enc = self.enc
        false = z3.BoolVal(False)
        if base == "resource.labels":
            present, value = enc.label(name)
            return _Term("str", value, z3.Not(present))
        if base == "user.traits":
            return _Term("trait", None, z3.Not(enc.trait(name).present), name=name)
        fields: dict[str, _Term] = {
            "user.name": _Term("str", enc.user_name, false),
            "resource.name": _Term("str", enc.node_name, false),
            "resource.kind": _Term("str", z3.StringVal("node"), false),
            "request.mfa_verified": _Term("bool", enc.mfa_verified, false),
            "request.source_ip": _Term("str", enc.source_ip, false),
        }
        return fields.get(f"{base}.{name}")


def _is_literal(term: _Term) -> bool:
    return bool(z3.is_string_value(z3.simplify(term.expr)))


def _path(node: ast.Node | None) -> str:
    if isinstance(node, ast.Var):
        return node.name
    if isinstance(node, ast.Member):
        base = _path(node.target)
        return f"{base}.{node.field}" if base else ""
    return ""


def _describe(node: ast.Node) -> str:
    if isinstance(node, ast.Call):
        return f"{node.name}()"
    if isinstance(node, ast.Cond):
        return "the ?: operator"
    if isinstance(node, ast.Binary):
        return f"the operator {node.op!r}"
    path = _path(node)
    if isinstance(node, ast.Member) and path:
        return path
    return type(node).__name__.lower()
